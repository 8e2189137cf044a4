"""A pacifica-notifications 0.5.2 site switches: same database, every subscription kept.

Upstream 0.5.2 (installed from the package index into a venv of its own, as
the benchmarks install upstream dispatcher 0.2.5) creates its schema with its
own ``dbsync`` and stores users' subscriptions through its own
``POST /eventmatch``. Then this service's ``pacifica-notifications-cmd
dbsync`` runs on the same database and its server takes over: every
subscription is listed for its owner, and a matching event is delivered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks.bench_service import ensure_upstream_venv
from tests.conftest import TEST_FILES, StubRequest, StubServer
from tests.integration.conftest import Deployment, ManagedProcess, free_port, wait_for
from tests.integration.test_template import clean_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UPSTREAM_VENV = Path(
    os.environ.get("UPSTREAM_NOTIFICATIONS_VENV", "/tmp/upstream-notifications-venv")
)
REQUIREMENTS = ("pacifica-notifications==0.5.2", "psycopg2-binary")
CP_CONFIG = "[global]\nengine.autoreload.on: False\n\n[/]\nrequest.dispatch: cherrypy.dispatch.MethodDispatcher()\n"
INGEST = '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]'
SUBSCRIPTIONS = [  # (user, name, JSONPath, target path): two match the test event, one does not
    ("dmlb2001", "ingests", INGEST, "/hook/ingests"),
    ("dmlb2001", "blah", '$.data.*[?(@.value="Blah")].value', "/hook/blah"),
    ("someone", "orm only", '$[?(@["eventType"] = "org.pacifica.metadata.orm")]', "/hook/orm"),
]


@pytest.fixture(scope="module")
def upstream_python() -> Path:
    return ensure_upstream_venv(UPSTREAM_VENV, REQUIREMENTS, "pacifica.notifications.orm, psycopg2")


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """The policy service (always allows) and the users' webhook targets, on loopback."""

    def respond(request: StubRequest) -> None:
        request.answer(200, b'{"status": "success"}')

    server = StubServer(respond).start()
    yield server
    server.stop()


def upstream_populates(
    python: Path, env: dict[str, str], tmp_path: Path, target: str
) -> dict[str, set[str]]:
    """Upstream's own dbsync and POST /eventmatch; the subscription uuids per user."""
    bin_dir = python.parent
    synced = subprocess.run(
        [str(bin_dir / "pacifica-notifications-cmd"), "dbsync"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    port = free_port()
    command = [str(bin_dir / "pacifica-notifications"), "-a", "127.0.0.1", "-p", str(port)]
    command += ["--cpconfig", env["NOTIFICATIONS_CPCONFIG"]]
    server = ManagedProcess("upstream", command, env, tmp_path / "upstream.log").start()
    url = f"http://127.0.0.1:{port}/eventmatch"
    made: dict[str, set[str]] = {}
    try:
        answers = (200, 403)  # upstream answers an empty list with 403
        wait_for(lambda: requests.get(url, timeout=2).status_code in answers, 60, 0.2, "upstream")
        for user, name, jsonpath, path in SUBSCRIPTIONS:
            body: dict[str, Any] = {"name": name, "jsonpath": jsonpath, "target_url": target + path}
            body["extensions"] = {"via": name}
            body["auth"] = {"type": "basic", "basic": {"username": user, "password": "pw"}}
            answer = requests.post(url, json=body, headers={"Http-Remote-User": user}, timeout=10)
            assert answer.status_code == 200, answer.text
            made.setdefault(user, set()).add(answer.json()["uuid"])
    finally:
        server.stop()
        print(server.log_tail())
    return made


def test_a_notifications_site_switches_keeping_every_subscription(
    upstream_python: Path,
    postgres_url: str,
    stub: StubServer,
    deployments: Callable[..., Deployment],
    tmp_path: Path,
) -> None:
    cp_config = tmp_path / "cp.conf"
    cp_config.write_text(CP_CONFIG, encoding="utf-8")
    settings = {
        "PEEWEE_URL": postgres_url,  # upstream's variable; this service reads it too
        "NOTIFICATIONS_CONFIG": str(tmp_path / "none.ini"),
        "NOTIFICATIONS_CPCONFIG": str(cp_config),
        "POLICY_URL": stub.url,
    }
    upstream_env = {**clean_environment(), **settings, "HOME": str(tmp_path)}
    made = upstream_populates(upstream_python, upstream_env, tmp_path, stub.url)

    ours = deployments(**settings)
    cmd = str(Path(sys.executable).parent / "pacifica-notifications-cmd")
    for expected in ("imported 3 subscription(s)", "imported 0 subscription(s)"):  # once only
        synced = subprocess.run(
            [cmd, "dbsync"], env=ours.env, capture_output=True, text=True, timeout=120, check=False
        )
        assert synced.returncode == 0, synced.stderr
        assert expected in synced.stdout
    server = str(Path(sys.executable).parent / "pacifica-notifications")
    ours.start_http("notifications", [server, "-a", "127.0.0.1", "-p", str(ours.port)])

    for user, uuids in made.items():
        listed = requests.get(
            f"{ours.url}/eventmatch", headers={"Http-Remote-User": user}, timeout=10
        ).json()
        assert {s["uuid"] for s in listed} == uuids

    event = json.loads((TEST_FILES / "notifications_events.json").read_text(encoding="utf-8"))
    assert ours.post(event).status_code == 202

    def delivered() -> list[StubRequest]:
        hooks = stub.seen("/hook/")
        return hooks if len(hooks) >= 2 else []

    hooks = wait_for(delivered, timeout=120, interval=0.2, what="both matching deliveries")
    assert sorted(h.path for h in hooks) == ["/hook/blah", "/hook/ingests"]
    for hook in hooks:
        body: dict[str, Any] = hook.json()
        assert body["eventID"] == event["eventID"]
        assert body["extensions"]["via"] in ("ingests", "blah")
        assert hook.headers["Authorization"].startswith("Basic ")
    assert [r.path for r in stub.seen("/events/")] == ["/events/dmlb2001"] * 2
