"""The dispatcher service end to end: real HTTP, real brokers and databases, real workers."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.conftest import LoadJson
from tests.integration.conftest import Deployment, RedisServer, event, wait_for

pytestmark = pytest.mark.integration


def check_statuses(deployment: Deployment) -> None:
    ok = deployment.post(event("ok"))
    assert ok.status_code == 202, ok.text
    fail = deployment.post(event("fail")).json()
    unrouted = deployment.post(event("nobody-listens")).json()
    deployment.wait_status(ok.json(), "200 OK")
    deployment.wait_status(fail, "500 Internal Server Error")
    deployment.wait_status(unrouted, "422 Unprocessable Entity")
    failed = deployment.get(fail)
    assert failed["exceptionType"] == "Exception"
    assert "ExceptionEventHandler has raised an exception." in failed["exceptionValue"]
    assert "Traceback" in failed["exceptionTraceback"]


def test_production_shape_routes_events_to_their_statuses(production: Deployment) -> None:
    check_statuses(production)


def test_embedded_default_routes_events_with_one_command(embedded: Deployment) -> None:
    check_statuses(embedded)
    assert (Path(embedded.env["DISPATCHER_DATA_DIR"]) / "dispatcher.sqlite3").exists()


def test_rabbitmq_broker_routes_events(
    deployments: Callable[..., Deployment], postgres_url: str, amqp_url: str
) -> None:
    deployment = deployments(DATABASE_URL=postgres_url, BROKER_URL=amqp_url)
    assert deployment.cli("db", "sync").returncode == 0
    deployment.start_server()
    deployment.start_worker()
    task_id = deployment.post(event("ok")).json()
    deployment.wait_status(task_id, "200 OK")


def test_real_pacifica_event_is_accepted_and_unrouted_without_routes(
    production: Deployment, load_json: LoadJson
) -> None:
    response = production.post(load_json("metadata_ingest_event.json"))
    assert response.status_code == 202
    production.wait_status(response.json(), "422 Unprocessable Entity")
    stored = production.get(response.json())
    assert stored["eventID"] == "metadata.ingest.1"
    assert json.loads(stored["data"])[-1] == {"destinationTable": "Transactions._id", "value": 1}


def test_fan_out_records_each_route_and_one_failure_fails_the_event(production: Deployment) -> None:
    task_id = production.post(event("fanout")).json()
    production.wait_status(task_id, "500 Internal Server Error")
    routes = {r["route"]: r["status"] for r in production.get(task_id)["routes"]}
    assert routes == {"fanout-ok": "SUCCEEDED", "fanout-fail": "FAILED"}


def test_duplicate_event_is_processed_once(production: Deployment, tmp_path: Path) -> None:
    slow = event("slow", "dup-1", dir=str(tmp_path))
    (tmp_path / "release").touch()
    first = production.post(slow)
    second = production.post(slow)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == first.json()
    production.wait_status(first.json(), "200 OK")
    assert (tmp_path / "done").read_text().splitlines() == ["dup-1"]


def test_batch_is_accepted_and_every_event_processed(production: Deployment) -> None:
    batch = [event("ok"), event("fail"), event("ok")]
    response = production.post(batch, {"Content-Type": "application/cloudevents-batch+json"})
    assert response.status_code == 202
    ids = response.json()
    assert len(ids) == 3
    for task_id, expected in zip(
        ids, ["200 OK", "500 Internal Server Error", "200 OK"], strict=True
    ):
        production.wait_status(task_id, expected)


def test_slow_events_sharing_a_message_still_run_in_parallel(
    production: Deployment, tmp_path: Path
) -> None:
    """A batch travels as one message; after a second its other events are handed back."""
    batch = [event("slow", dir=str(tmp_path), seconds=1.5) for _ in range(4)]
    ids = production.post(batch, {"Content-Type": "application/cloudevents-batch+json"}).json()
    for task_id in ids:
        production.wait_status(task_id, "200 OK", timeout=60)
    pids = (tmp_path / "started").read_text().split()
    assert len(pids) == 4
    assert len(set(pids)) == 2  # both pool processes took part


def test_binary_mode_event_is_routed(production: Deployment) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "binary-1",
        "ce-type": "org.example.ok",
        "ce-source": "/tests",
        "Content-Type": "application/json",
    }
    response = production.post(b'[{"destinationTable": "Files"}]', headers)
    assert response.status_code == 202
    production.wait_status(response.json(), "200 OK")


def test_killed_pool_process_is_redelivered_and_finishes(
    production: Deployment, tmp_path: Path
) -> None:
    task_id = production.post(event("slow", dir=str(tmp_path))).json()
    started = tmp_path / "started"

    def started_pids() -> list[str]:
        return started.read_text().split() if started.exists() else []

    pid = int(wait_for(started_pids, 60, what="start")[0])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(started.read_text().split()) == 2, 60, what="the redelivery")
    (tmp_path / "release").touch()
    production.wait_status(task_id, "200 OK")
    assert (tmp_path / "done").read_text().split() == [production.get(task_id)["eventID"]]


def test_a_second_copy_of_a_running_events_message_does_not_run_it_again(
    production: Deployment, tmp_path: Path
) -> None:
    """Two messages for one event (as the sweeper sends during a long backlog): one run."""
    from celery import Celery

    task_id = production.post(event("slow", dir=str(tmp_path))).json()
    started = tmp_path / "started"
    wait_for(lambda: started.exists() and started.read_text().split(), 60, what="the start")
    sender = Celery(broker=production.env["BROKER_URL"], set_as_current=False)
    copy = sender.send_task("pacifica.dispatcher.process", args=[task_id]).id
    worker_log = next(p for p in production.processes if p.name == "worker").log_path
    wait_for(
        lambda: f"{copy}] succeeded" in worker_log.read_text(encoding="utf-8"),
        60,
        what="the copy to be handled",
    )
    assert len(started.read_text().split()) == 1
    (tmp_path / "release").touch()
    production.wait_status(task_id, "200 OK")
    assert len((tmp_path / "done").read_text().split()) == 1
    assert production.get(task_id)["attempts"] == 1


def test_crashed_worker_leaves_the_event_to_the_next_worker(
    deployments: Callable[..., Deployment], postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    deployment = deployments(DATABASE_URL=postgres_url, BROKER_URL=redis_url, PROCESSING_LEASE="3")
    assert deployment.cli("db", "sync").returncode == 0
    deployment.start_server()
    worker = deployment.start_worker()
    task_id = deployment.post(event("slow", dir=str(tmp_path))).json()
    started = tmp_path / "started"
    # Its pid written, not just the file created: a kill in between leaves no trace.
    wait_for(lambda: started.exists() and started.read_text().split(), 60, what="the start")
    worker.kill()  # SIGKILL to the worker and its pool: nothing is acknowledged
    (tmp_path / "release").touch()
    deployment.start_worker()
    deployment.wait_status(task_id, "200 OK", timeout=90)
    assert len(started.read_text().split()) == 2
    assert production_attempts(deployment, task_id) >= 2


def production_attempts(deployment: Deployment, task_id: str) -> int:
    return int(deployment.get(task_id)["attempts"])


def test_events_arriving_while_the_broker_is_down_are_processed_when_it_returns(
    deployments: Callable[..., Deployment], postgres_url: str, redis_server: RedisServer
) -> None:
    broker = redis_server()
    deployment = deployments(
        DATABASE_URL=postgres_url, BROKER_URL=f"redis://127.0.0.1:{redis_server.port}/0"
    )
    assert deployment.cli("db", "sync").returncode == 0
    deployment.start_server()
    deployment.start_worker()
    deployment.wait_status(deployment.post(event("ok")).json(), "200 OK")
    broker.kill()
    responses = [deployment.post(event("ok")) for _ in range(5)]
    assert [r.status_code for r in responses] == [202] * 5
    assert {deployment.status(r.json()) for r in responses} == {"202 Accepted"}
    redis_server()
    for response in responses:
        deployment.wait_status(response.json(), "200 OK", timeout=120)


def test_embedded_default_survives_a_crash_without_losing_accepted_events(
    deployments: Callable[..., Deployment], tmp_path: Path
) -> None:
    deployment = deployments(PROCESSING_LEASE="3")
    server = deployment.start_server()
    task_id = deployment.post(event("slow", dir=str(tmp_path))).json()
    wait_for((tmp_path / "started").exists, 60, what="the handler to start")
    server.kill()  # the receiver, its worker and the worker's pool all die at once
    (tmp_path / "release").touch()
    deployment.start_server()
    deployment.wait_status(task_id, "200 OK", timeout=90)


def test_cli_events_get_retry_and_purge(production: Deployment) -> None:
    task_id = production.post(event("fail")).json()
    production.wait_status(task_id, "500 Internal Server Error")
    shown = production.cli("events", "get", task_id)
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["taskStatus"] == "500 Internal Server Error"
    retried = production.cli("events", "retry", task_id)
    assert retried.returncode == 0, retried.stderr
    production.wait_status(task_id, "500 Internal Server Error")
    assert production_attempts(production, task_id) == 2
    purged = production.cli("events", "purge", "--older-than", "2999-01-01")
    assert "purged 1 event" in purged.stdout
    assert requests.get(f"{production.url}/status/{task_id}", timeout=10).status_code == 404


def test_db_check_tells_whether_the_schema_matches(
    deployments: Callable[..., Deployment], postgres_url: str
) -> None:
    deployment = deployments(DATABASE_URL=postgres_url)
    assert deployment.cli("db", "check").returncode == 1
    refused = deployment.cli("serve", "--port", str(deployment.port))
    assert refused.returncode == 2
    assert "db sync" in refused.stderr
    assert deployment.cli("db", "sync").returncode == 0
    assert deployment.cli("db", "check").returncode == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "status"),
    [
        ("POST", "/receive", b"{bad", "application/json", 400),
        ("POST", "/receive", b"{}", "application/json", 400),
        ("POST", "/receive", b"hello", "text/plain", 415),
        ("POST", "/receive", b"[" + b"1," * 6_000_000 + b"1]", "application/json", 413),
        ("GET", "/receive", b"", None, 405),
        ("GET", "/status/not-a-uuid", b"", None, 422),
        ("GET", "/get/00000000-0000-0000-0000-000000000000", b"", None, 404),
        ("GET", "/no/such/path", b"", None, 404),
    ],
)
def test_bad_input_over_real_http_gets_json_errors(
    embedded: Deployment, method: str, path: str, body: bytes, content_type: str | None, status: int
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.request(method, embedded.url + path, data=body, headers=headers, timeout=30)
    assert response.status_code == status
    payload = response.json()
    assert set(payload) == {"status", "message"}
    assert "Traceback" not in response.text


def test_wsgi_entry_serves_the_receiver_under_gunicorn(
    deployments: Callable[..., Deployment], postgres_url: str, redis_url: str
) -> None:
    deployment = deployments(DATABASE_URL=postgres_url, BROKER_URL=redis_url)
    assert deployment.cli("db", "sync").returncode == 0
    gunicorn = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{deployment.port}"]
    deployment.start_http("gunicorn", [*gunicorn, "pacifica.dispatcher.wsgi:application"])
    deployment.start_worker()
    task_id = deployment.post(event("ok")).json()
    deployment.wait_status(task_id, "200 OK")
    missing = requests.get(f"{deployment.url}/nope", timeout=10)
    assert (missing.status_code, missing.json()["status"]) == (404, "404 Not Found")
