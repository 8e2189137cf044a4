"""The whole loop: real Pacifica ingest → metadata's CloudEvent → the dispatcher → a new transaction.

A dispatcher deployment (embedded default: SQLite and a filesystem broker, ``serve`` starts its
own worker) listens where the stack's metadata sends its notifications. Its one route
(tests/integration/e2e_app.py) downloads an ingested transaction's files through the real cartd,
upper-cases them and uploads them through the real ingest as a new transaction carrying
``Transactions._id`` = the original id. That upload's own ingest event comes back to the
dispatcher and matches no route (the JSONPath skips derived transactions), so the loop stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from pacifica.dispatcher.models import File, Transaction, TransactionKeyValue
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner
from tests.conftest import service_required
from tests.integration.conftest import Deployment, ManagedProcess, wait_for
from tests.integration.e2e_app import PROVENANCE_KEY, ROUTE_NAME
from tests.pacifica_stack.plugin import notify_url, pacifica_stack  # noqa: F401
from tests.pacifica_stack.stack import (
    INSTRUMENT,
    PROJECT,
    SUBMITTER,
    PacificaStack,
    cart_fileids,
    download_cart,
)

pytestmark = [pytest.mark.integration, pytest.mark.pacifica_stack]

INGEST_EVENT = "org.pacifica.metadata.ingest"
#: Generous: two cores, and other test suites run beside this one.
SERVICE_TIMEOUT = 120.0
#: The handler downloads and uploads a transaction before the first event is done.
LOOP_TIMEOUT = 240.0


@pytest.fixture(scope="session")
def receiver_address() -> tuple[str, int]:
    """Host and port the dispatcher must serve on: where metadata sends its notifications.

    Session-scoped and requested first, so that a notify URL the dispatcher cannot serve skips
    (fails on CI) before the stack is started for nothing.
    """
    url = notify_url()
    parts = urlsplit(url)
    if parts.path.rstrip("/") != "/receive" or parts.hostname is None or parts.port is None:
        service_required(
            f"PACIFICA_NOTIFY_URL={url!r}: the dispatcher receives on http://HOST:PORT/receive"
        )
    return str(parts.hostname), int(parts.port or 0)


@contextlib.contextmanager
def serving_on_notify_port(
    receiver_address: tuple[str, int],
    stack: PacificaStack,
    deployments: Callable[..., Deployment],
    module: str,
) -> Iterator[Deployment]:
    """``python -m <module> serve`` on the notify port, its runners pointing at the stack."""
    host, port = receiver_address
    deployment = deployments(
        CARTD_URL=stack.cartd_url,
        INGEST_URL=stack.ingest_url,
        TRANSFER_TIMEOUT=str(SERVICE_TIMEOUT),
        REQUEST_TIMEOUT="60",
    )
    deployment.port = port
    command = [sys.executable, "-m", module, "serve"]
    server = ManagedProcess(
        "server",
        [*command, "--host", host, "--port", str(port)],
        deployment.env,
        deployment.workdir / "server.log",
    ).start()
    deployment.processes.append(server)

    def answers() -> bool:
        if not server.alive():
            return True  # reported below, without waiting out the deadline
        return requests.get(f"{deployment.url}/?limit=1", timeout=5).status_code == 200

    try:
        wait_for(answers, SERVICE_TIMEOUT, 0.1, "the dispatcher to answer on the notify port")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{server.log_tail()}") from None
    if not server.alive():
        raise AssertionError(f"the dispatcher exited:\n{server.log_tail()}")
    yield deployment
    # One SIGTERM to the receiver, which stops its worker: SIGTERM to the whole process group at
    # once (ManagedProcess.stop) sometimes leaves Celery's warm shutdown spinning until SIGKILL.
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(SERVICE_TIMEOUT)
    server.kill()  # whatever is left of the group; the port is free again for event sinks


@pytest.fixture
def dispatcher(
    receiver_address: tuple[str, int],
    pacifica_stack: PacificaStack,  # noqa: F811 (fixture imported above)
    deployments: Callable[..., Deployment],
) -> Iterator[Deployment]:
    """The e2e_app dispatcher on the notify port, its runners pointing at the stack."""
    with serving_on_notify_port(
        receiver_address, pacifica_stack, deployments, "tests.integration.e2e_app"
    ) as deployment:
        yield deployment


def make_tree(root: Path) -> dict[str, bytes]:
    """Lower-case text, binary bytes (some of them ASCII letters) and a nested non-ASCII name."""
    files = {
        "notes.txt": b"hello, pacifica!\nmixed Case line 2\n",
        "raw/blob.bin": os.urandom(50_000) + b"abcxyz\x00\xff",
        "données/été/naïve ☃.txt": "abc grüße ☃\n".encode(),
    }
    for relpath, blob in files.items():
        target = root.joinpath(*relpath.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    return files


def transaction_id(data: list[dict[str, Any]]) -> Any:
    """The ``Transactions._id`` in an ingest event's data list."""
    return next((r["value"] for r in data if r.get("destinationTable") == "Transactions._id"), None)


def find_event(deployment: Deployment, predicate: Callable[[dict[str, Any]], bool]) -> Any:
    """The stored ingest event (``GET /get/<task id>``) for which ``predicate`` holds, or None."""
    listing = requests.get(f"{deployment.url}/?limit=1000", timeout=10).json()
    for summary in listing:
        if summary["eventType"] == INGEST_EVENT:
            described = deployment.get(summary["taskID"])
            if predicate(described):
                return described
    return None


def wait_final(deployment: Deployment, task_id: str, timeout: float) -> dict[str, Any]:
    """Wait until the event is no longer accepted or processing; return ``GET /get``."""

    def final() -> Any:
        described = deployment.get(task_id)
        return described if described["taskStatus"].split()[0] in ("200", "422", "500") else None

    try:
        return dict(wait_for(final, timeout, 0.2, f"event {task_id} to be processed"))
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.log_path.name}\n{p.log_tail(80)}" for p in deployment.processes)
        raise AssertionError(f"{exc}\n{logs}") from None


def metadata_key_values(stack: PacificaStack, transaction: int) -> dict[str, str]:
    """The transaction's key/values as metadata stores them (keys and values are ids there)."""

    def one(table: str, _id: Any) -> Any:
        url = f"{stack.metadata_url}/{table}"
        return requests.get(url, params={"_id": _id}, timeout=30).json()[0]

    links = requests.get(
        f"{stack.metadata_url}/trans_key_value", params={"transaction": transaction}, timeout=30
    ).json()
    return {
        one("keys", link["key"])["key"]: one("values", link["value"])["value"] for link in links
    }


def test_ingest_event_runs_the_handler_and_its_upload_comes_back_upper_cased(
    receiver_address: tuple[str, int],
    pacifica_stack: PacificaStack,  # noqa: F811
    dispatcher: Deployment,
    tmp_path: Path,
) -> None:
    originals = make_tree(tmp_path / "tree")
    tag = uuid.uuid4().hex
    original = Transaction(submitter=SUBMITTER, project=PROJECT, instrument=INSTRUMENT)

    # 1. A transaction goes into the real ingest.
    uploaded = RemoteUploaderRunner(pacifica_stack.ingest_url).upload(
        str(tmp_path / "tree"),
        transaction=original,
        transaction_key_values=[TransactionKeyValue(key="run_tag", value=tag)],
        timeout=SERVICE_TIMEOUT,
    )
    original_id = uploaded.job_id
    assert original_id is not None

    # 2. Metadata's real event reached our /receive, and the route ran to success.
    first = wait_for(
        lambda: find_event(dispatcher, lambda e: e["eventID"] == f"metadata.ingest.{original_id}"),
        SERVICE_TIMEOUT,
        0.2,
        f"metadata's ingest event of transaction {original_id}",
    )
    first = wait_final(dispatcher, first["taskID"], LOOP_TIMEOUT)
    assert first["taskStatus"] == "200 OK", first
    assert [(r["route"], r["status"]) for r in first["routes"]] == [(ROUTE_NAME, "SUCCEEDED")]
    assert first["specVersion"] == "0.1"
    assert first["source"] == f"http://metadata.pacifica.org/transactions?_id={original_id}"

    # 3. The handler's upload produced its own ingest event, which matches no route.
    def derived(described: dict[str, Any]) -> bool:
        data = json.loads(described["data"])
        return any(
            r.get("destinationTable") == "TransactionKeyValue"
            and r.get("key") == PROVENANCE_KEY
            and r.get("value") == original_id
            for r in data
        )

    second = wait_for(
        lambda: find_event(dispatcher, derived),
        SERVICE_TIMEOUT,
        0.2,
        f"the ingest event of the transaction derived from {original_id}",
    )
    second = wait_final(dispatcher, second["taskID"], SERVICE_TIMEOUT)
    assert second["taskStatus"] == "422 Unprocessable Entity", second
    assert second["routes"] == []
    data = json.loads(second["data"])
    second_id = transaction_id(data)
    assert isinstance(second_id, int)
    assert second_id != original_id
    assert second["eventID"] == f"metadata.ingest.{second_id}"
    copied = Transaction.from_event(data)
    assert (copied.submitter, copied.project, copied.instrument) == (
        SUBMITTER,
        PROJECT,
        INSTRUMENT,
    )
    assert [(kv.key, kv.value) for kv in TransactionKeyValue.from_event(data)] == [
        (PROVENANCE_KEY, original_id)
    ]
    # Metadata stored the provenance too (values are text there).
    assert metadata_key_values(pacifica_stack, second_id) == {PROVENANCE_KEY: str(original_id)}

    # 4. The derived transaction's files, fetched from Pacifica, are the upper-cased originals.
    files = File.from_event(data)
    assert sorted(f.path for f in files) == sorted(originals)
    records = [r for r in data if r.get("destinationTable") == "Files"]
    fetched = download_cart(pacifica_stack, cart_fileids(records), timeout=SERVICE_TIMEOUT)
    assert fetched == {path: blob.upper() for path, blob in originals.items()}
    for file in files:
        expected = originals[file.path].upper()
        assert file.size == len(expected), file.path
        assert file.hashsum == hashlib.sha1(expected, usedforsecurity=False).hexdigest()

    # Exactly one derived transaction: the route did not run on its own upload.
    every = requests.get(f"{dispatcher.url}/?limit=1000", timeout=10).json()
    ingests = [s for s in every if s["eventType"] == INGEST_EVENT]
    assert sorted(s["taskStatus"] for s in ingests) == ["200 OK", "422 Unprocessable Entity"]
