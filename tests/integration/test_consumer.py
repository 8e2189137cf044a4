"""start-pacifica-notifications-consumer against a running dispatcher producer, for real.

The reference's uppercase example is built as a consumer.zip (its two requirement lines
corrected); the consumer command runs as a real process with a real venv (installed from a
wheelhouse downloaded once per session), a real worker and receiver, and subscribes to a real
producer (``tests.integration.app``, embedded default). Inputs come from a fake cartd and
outputs go to a fake ingest (real HTTP servers, tests/fake_pacifica.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.consumer_example import CORRECTED, build_zip
from tests.fake_pacifica import FakeCartd, FakeIngest
from tests.integration.conftest import (
    REPO,
    Deployment,
    ManagedProcess,
    base_env,
    free_port,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USER = "scientist"
INPUT = b"hello, pacifica!\nmixed Case line 2\n"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The consumer venv's packages as wheels, built once: each consumer installs them offline
    (promise is an sdist; building it in every venv would need the index)."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(folder), "promise", "jsonpath2"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed: {done.stderr}")
    return folder


@dataclass
class Consumer:
    """A running start-pacifica-notifications-consumer."""

    process: ManagedProcess
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def recent(self) -> list[dict[str, Any]]:
        """Every stored event, described (``GET /get``), newest first."""
        listing = requests.get(f"{self.url}/?limit=100", timeout=10).json()
        return [self.get(s["taskID"]) for s in listing]

    def get(self, task_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/get/{task_id}", timeout=10).json())

    def wait_final(self, event_id: str, timeout: float = 90) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            for described in self.recent():
                done = described["taskStatus"].split()[0] in ("200", "422", "500")
                if described["eventID"] == event_id and done:
                    return described
            return None

        try:
            found = wait_for(final, timeout, 0.2, f"the consumer to run {event_id}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.process.log_tail(60)}") from None
        assert found is not None
        return found

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a user's Ctrl-C or a service manager would; the exit status."""
        assert self.process.process is not None
        if self.process.alive():
            os.kill(self.process.process.pid, signal.SIGTERM)
        try:
            return self.process.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"consumer did not stop:\n{self.process.log_tail()}") from None


def subscriptions(producer: Deployment) -> list[dict[str, Any]]:
    response = requests.get(
        f"{producer.url}/eventmatch", headers={"Http-Remote-User": USER}, timeout=10
    )
    return list(response.json())


@pytest.fixture
def producer(deployments: Callable[..., Deployment]) -> Deployment:
    deployment = deployments()
    deployment.start_server()
    return deployment


@pytest.fixture
def pacifica() -> Iterator[tuple[FakeCartd, FakeIngest]]:
    with FakeCartd() as cartd, FakeIngest() as ingest:
        yield cartd, ingest


def launch(
    files: dict[str, str],
    workdir: Path,
    wheelhouse: Path,
    producer_url: str,
    transfer: tuple[str, str],
    port: int | None = None,
) -> Consumer:
    """Build ``files`` into a zip and start a consumer of it; return once it is registered."""
    workdir.mkdir()
    archive = build_zip(workdir.with_suffix(".zip"), files)
    env = base_env(workdir, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    del env["DISPATCHER_DATA_DIR"]  # the embedded default: inside the consumer's temp dir
    port = port or free_port()
    cartd_url, ingest_url = transfer
    command = [
        *(sys.executable, "-m", "pacifica.dispatcher.consumer.command", str(archive)),
        *("--producer", producer_url, "--user", USER, "--port", str(port)),
        *("--cartd-url", cartd_url, "--ingest-url", ingest_url, "--workdir", str(workdir)),
        *("--timeout", "120", "--grace", "20"),
    ]
    log = workdir.with_suffix(".log")
    process = ManagedProcess(workdir.name, command, env, log).start()
    consumer = Consumer(process, port, workdir)
    try:
        wait_for(
            lambda: "; ready" in log.read_text() or not process.alive(),
            90,
            0.1,
            f"{workdir.name} to register",
        )
    except AssertionError as exc:
        process.kill()
        raise AssertionError(f"{exc}\n{process.log_tail()}") from None
    assert process.alive(), process.log_tail()
    return consumer


def stop_all(consumers: list[Consumer]) -> None:
    """Stop consumers, and kill what a crashed one left running."""
    for consumer in consumers:
        consumer.process.stop()
        for pid in worker_pids(str(consumer.workdir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start_consumer(
    tmp_path: Path,
    wheelhouse: Path,
    producer: Deployment,
    pacifica: tuple[FakeCartd, FakeIngest],
) -> Iterator[Callable[..., Consumer]]:
    started: list[Consumer] = []
    cartd, ingest = pacifica

    def start(files: dict[str, str], port: int | None = None) -> Consumer:
        workdir = tmp_path / f"consumer-{len(started)}"
        consumer = launch(files, workdir, wheelhouse, producer.url, (cartd.url, ingest.url), port)
        started.append(consumer)
        return consumer

    yield start
    stop_all(started)


def reference_event(cartd: FakeCartd, mimetype: str = "text/plain") -> dict[str, Any]:
    """An event of the reference document's shape, its file served by the fake cartd."""
    file_id = int(uuid.uuid4().int % 10**6)
    file = cartd.add(file_id, "notes/foo.txt", INPUT)
    record = {
        **{k: v for k, v in file.__dict__.items() if v is not None},
        "destinationTable": "Files",
        "mimetype": mimetype,
    }
    return {
        "cloudEventsVersion": "0.1",
        "eventType": "org.pacifica.metadata.ingest",
        "source": "/pacifica/metadata/ingest",
        "eventID": uuid.uuid4().hex,
        "eventTime": "2026-01-01T00:00:00Z",
        "contentType": "application/json",
        "data": [
            {"destinationTable": "Transactions._id", "value": 67},
            {"destinationTable": "Transactions.submitter", "value": 10},
            {"destinationTable": "Transactions.proposal", "value": "1234a"},
            {"destinationTable": "Transactions.instrument", "value": 54},
            record,
        ],
    }


def bundle_files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def worker_pids(workspace_marker: str) -> list[int]:
    """Processes whose environment names this consumer's workspace (its worker, entry points)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if workspace_marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
    return found


def test_the_uppercase_example_runs_for_matching_events_and_stops_cleanly(
    producer: Deployment,
    pacifica: tuple[FakeCartd, FakeIngest],
    start_consumer: Callable[..., Consumer],
) -> None:
    cartd, ingest = pacifica
    consumer = start_consumer(CORRECTED)
    (subscription,) = [s for s in subscriptions(producer) if not s["deleted"]]
    assert subscription["target_url"] == f"{consumer.url}/receive"
    assert subscription["secret"]  # the producer signs this consumer's deliveries
    (workspace,) = list(consumer.workdir.iterdir())

    matching, other = reference_event(cartd), reference_event(cartd, "application/octet-stream")
    for event in (matching, other):
        assert producer.post(event).status_code == 202

    ran = consumer.wait_final(matching["eventID"])
    assert ran["taskStatus"] == "200 OK", ran
    (run,) = ran["routes"]
    assert (run["route"], run["status"]) == ("consumer", "SUCCEEDED")
    report = json.loads(run["report"])
    assert report["exitStatus"] == 0
    assert report["upload"]["by"] == "entry point"  # the helper uploaded: the command did not
    assert len(ingest.uploads) == 1
    (job_id,) = ingest.uploads
    assert report["upload"]["job_id"] == job_id
    files = bundle_files(ingest.bundle(job_id))
    assert files["data/notes/foo.txt"] == INPUT.upper()
    metadata = json.loads(files["metadata.txt"])
    assert {"destinationTable": "TransactionKeyValue", "key": "Transactions._id", "value": 67} in (
        metadata
    )
    assert {"destinationTable": "Transactions.project", "value": "1234a"} in metadata
    assert hashlib.sha1(INPUT, usedforsecurity=False).hexdigest() in json.dumps(matching)

    # The other event reached the producer but never the consumer: its JSONPath did not match.
    assert all(s["eventID"] != other["eventID"] for s in consumer.recent())

    # A forged or unsigned delivery is refused, and nothing is stored.
    forged = {**matching, "eventID": "forged"}
    headers = {
        "Content-Type": "application/json",
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl",
    }
    for sent in (headers, {"Content-Type": "application/json"}):
        answer = requests.post(f"{consumer.url}/receive", json=forged, headers=sent, timeout=10)
        assert answer.status_code == 401, answer.text
    assert all(s["eventID"] != "forged" for s in consumer.recent())

    # The CLI shows the run.
    shown = subprocess.run(
        [
            *(sys.executable, "-m", "pacifica.dispatcher.consumer.command"),
            *("--port", str(consumer.port), "--show", ran["taskID"]),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"exitStatus": 0' in shown.stdout

    # Stopping reverses everything: subscription, processes, files.
    assert worker_pids(str(workspace))
    assert consumer.stop() == 0, consumer.process.log_tail()
    assert [s for s in subscriptions(producer) if not s["deleted"]] == []
    assert not workspace.exists()
    wait_for(lambda: not worker_pids(str(workspace)), 30, 0.1, "the worker to exit")


FAILING_MAIN = """\
import sys
print("reading", sys.argv[1])
print("something went wrong in the entry point", file=sys.stderr)
sys.exit(3)
"""


def test_a_failing_entry_point_is_recorded_with_its_stderr_after_a_crash_and_restart(
    producer: Deployment,
    pacifica: tuple[FakeCartd, FakeIngest],
    start_consumer: Callable[..., Consumer],
) -> None:
    cartd, ingest = pacifica
    files = {**CORRECTED, "__main__.py": FAILING_MAIN}
    crashed = start_consumer(files)
    crashed.process.kill()  # a crash: its subscription stays behind
    (stale,) = [s for s in subscriptions(producer) if not s["deleted"]]

    consumer = start_consumer(files, port=crashed.port)  # started again, same public URL
    (active,) = [s for s in subscriptions(producer) if not s["deleted"]]
    assert active["uuid"] != stale["uuid"]  # replaced: never two subscriptions for one consumer
    assert f"replaced stale subscription(s) {stale['uuid']}" in consumer.process.log_tail()

    event = reference_event(cartd)
    assert producer.post(event).status_code == 202
    ran = consumer.wait_final(event["eventID"])
    assert ran["taskStatus"] == "500 Internal Server Error", ran
    (run,) = ran["routes"]
    assert run["status"] == "FAILED"
    assert run["exceptionType"] == "EntryPointError"
    assert "__main__.py exited with status 3" in run["exceptionValue"]
    assert "something went wrong in the entry point" in run["exceptionValue"]
    assert ingest.uploads == {}
    assert consumer.stop() == 0
