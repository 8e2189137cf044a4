"""Issue 17 with a real server: past RECEIVE_BACKLOG the receiver answers 503 + Retry-After at
once, and every event it answered 2xx for is stored.

The embedded default (``serve``: SQLite, CherryPy's server, its worker) runs
with ``RECEIVE_BACKLOG=2``. The test holds SQLite's write lock from its own
connection, so the receiver's group commit cannot store anything: the first
two requests wait, the others must be refused without waiting. Releasing the
lock lets the waiting two through.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Deployment, event, wait_for

pytestmark = pytest.mark.integration
BACKLOG = 2
REQUESTS = 10


@pytest.fixture
def write_lock(tmp_path: Path) -> Iterator[Callable[[Path], sqlite3.Connection]]:
    """Take a SQLite file's write lock (BEGIN IMMEDIATE); released at the end whatever happens."""
    held: list[sqlite3.Connection] = []

    def take(database: Path) -> sqlite3.Connection:
        connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        connection.execute("BEGIN IMMEDIATE")
        held.append(connection)
        return connection

    yield take
    for connection in held:
        connection.close()


def test_past_the_backlog_the_receiver_answers_503_at_once_and_stores_every_2xx_event(
    deployments: Callable[..., Deployment], write_lock: Callable[[Path], sqlite3.Connection]
) -> None:
    deployment = deployments(RECEIVE_BACKLOG=str(BACKLOG))
    deployment.start_server()
    lock = write_lock(deployment.workdir / "data" / "dispatcher.sqlite3")
    events = [event("overload", f"overload-{n}") for n in range(REQUESTS)]
    with concurrent.futures.ThreadPoolExecutor(REQUESTS) as pool:
        answers = [pool.submit(deployment.post, body) for body in events]
        # Everything past the backlog is answered while the database is still locked.
        wait_for(
            lambda: sum(a.done() for a in answers) >= REQUESTS - BACKLOG,
            20,
            what="the requests past the backlog to be answered",
        )
        refused = [a.result() for a in answers if a.done()]
        assert [r.status_code for r in refused] == [503] * (REQUESTS - BACKLOG)
        assert all(r.headers["Retry-After"] == "1" for r in refused)
        assert all(r.json()["status"].startswith("503") for r in refused)
        lock.execute("ROLLBACK")
        responses = [a.result(timeout=30) for a in answers]
    accepted = [r.json() for r in responses if 200 <= r.status_code < 300]
    assert len(accepted) == BACKLOG
    for task_id in accepted:
        assert requests.get(f"{deployment.url}/status/{task_id}", timeout=10).status_code == 200
    # The refused events were not stored: sending them again creates them (202, not 200).
    refused_events = [b for b, r in zip(events, responses, strict=True) if r.status_code == 503]
    again = [deployment.post(body) for body in refused_events]
    assert [r.status_code for r in again] == [202] * (REQUESTS - BACKLOG)


def test_the_built_in_server_keeps_fifty_clients_connected(
    deployments: Callable[..., Deployment],
) -> None:
    """cheroot's default closes every connection past the tenth: clients paid a reconnect."""
    deployment = deployments()
    deployment.start_server()
    connections = [
        http.client.HTTPConnection("127.0.0.1", deployment.port, timeout=30) for _ in range(50)
    ]
    try:
        for round_ in range(2):
            for n, connection in enumerate(connections):
                body = json.dumps(event("keepalive", f"keepalive-{round_}-{n}")).encode()
                connection.request("POST", "/receive", body, {"Content-Type": "application/json"})
                answer = connection.getresponse()
                answer.read()
                assert answer.status == 202
                assert answer.getheader("Connection") != "close"
    finally:
        for connection in connections:
            connection.close()
