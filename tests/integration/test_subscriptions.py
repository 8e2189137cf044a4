"""Subscriptions end to end: the real service and Celery worker on Redis + PostgreSQL,
a real HTTP target on 127.0.0.1 that records what it receives, and a real policy server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import LoadJson
from tests.integration.conftest import Deployment, wait_for

pytestmark = pytest.mark.integration
ALICE = {"Http-Remote-User": "dmlb2001"}
BOB = {"Http-Remote-User": "bob"}


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Behaviour:
    """What a path answers: ``fail`` more 503s first, then ``status``; ``delay`` seconds each."""

    status: int = 200
    fail: int = 0
    delay: float = 0.0


@dataclass
class HTTPRecorder:
    """A real HTTP server on 127.0.0.1 that records every POST and answers per path."""

    server: ThreadingHTTPServer
    received: list[Recorded] = field(default_factory=list)
    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str) -> tuple[int, float]:
        with self.lock:
            rule = self.behaviour.get(path, Behaviour())
            if rule.fail > 0:
                rule.fail -= 1
                return 503, rule.delay
            return rule.status, rule.delay

    def at(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.received if r.path == path]


def _handler_for(recorder: HTTPRecorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with recorder.lock:
                recorder.received.append(Recorded(self.path, dict(self.headers), body))
            status, delay = recorder.answer(self.path)
            if delay:
                time.sleep(delay)  # the target is slow on purpose, not synchronisation
            payload = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            del args

    return Handler


def start_recorder() -> HTTPRecorder:
    recorder = HTTPRecorder(ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler))
    recorder.server.RequestHandlerClass = _handler_for(recorder)
    threading.Thread(target=recorder.server.serve_forever, daemon=True).start()
    return recorder


@pytest.fixture
def target() -> Iterator[HTTPRecorder]:
    recorder = start_recorder()
    yield recorder
    recorder.server.shutdown()


@pytest.fixture
def policy() -> Iterator[HTTPRecorder]:
    recorder = start_recorder()
    yield recorder
    recorder.server.shutdown()


@pytest.fixture
def service(
    deployments: Callable[..., Deployment], postgres_url: str, redis_url: str, policy: HTTPRecorder
) -> Deployment:
    deployment = deployments(
        DATABASE_URL=postgres_url,
        BROKER_URL=redis_url,
        POLICY_URL=policy.url,
        DELIVERY_BACKOFF="0.2",
        DELIVERY_MAX_ATTEMPTS="4",
        DISABLE_AFTER="2",
        REQUEST_TIMEOUT="2",
    )
    synced = deployment.cli("db", "sync")
    assert synced.returncode == 0, synced.stderr
    deployment.start_server()
    deployment.start_worker()
    return deployment


def subscribe(
    service: Deployment, body: dict[str, Any], headers: dict[str, str] = ALICE
) -> dict[str, Any]:
    response = requests.post(f"{service.url}/eventmatch", json=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def pacifica_event(event_id: str, load_json: LoadJson, **changes: Any) -> dict[str, Any]:
    return {**load_json("notifications_events.json"), "eventID": event_id, **changes}


def deliveries_of(service: Deployment, task_id: str) -> list[dict[str, Any]]:
    shown = service.cli("events", "get", task_id)
    assert shown.returncode == 0, shown.stderr
    return list(json.loads(shown.stdout)["deliveries"])


def test_reference_api_examples_verbatim(service: Deployment) -> None:
    headers = {**ALICE, "Content-Type": "application/json"}
    created = requests.post(
        f"{service.url}/eventmatch",
        data='{\n"name": "My Event Match",\n"jsonpath": "data",\n"target_url": "http://www.example.com/recieve"\n}',
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 200
    assert created.headers["Content-Type"].startswith("application/json")
    body = created.json()
    assert {
        k: body[k]
        for k in (
            "user",
            "deleted",
            "version",
            "jsonpath",
            "disabled",
            "name",
            "extensions",
            "auth",
            "error",
        )
    } == {
        "user": "dmlb2001",
        "deleted": None,
        "version": "v0.1",
        "jsonpath": "data",
        "disabled": None,
        "name": "My Event Match",
        "extensions": {},
        "auth": {},
        "error": None,
    }
    path = f"{service.url}/eventmatch/{body['uuid']}"
    assert requests.get(path, headers=headers, timeout=10).json() == body
    updated = requests.put(
        path, data='{"target_url": "http://api.example.com/receive"}', headers=headers, timeout=10
    )
    assert updated.json()["target_url"] == "http://api.example.com/receive"
    assert requests.delete(path, headers=ALICE, timeout=10).status_code == 200
    with_auth = subscribe(
        service,
        {
            "name": "My Event Match",
            "jsonpath": "data",
            "auth": {"type": "basic", "basic": {"username": "myusername", "password": "password"}},
            "target_url": "http://www.example.com/recieve",
        },
    )
    assert with_auth["auth"]["basic"] == {"username": "myusername", "password": "********"}


def test_access_rules_and_bad_bodies_over_http(service: Deployment) -> None:
    mine = subscribe(service, {"name": "a", "jsonpath": "$", "target_url": "http://127.0.0.1:9/"})
    path = f"{service.url}/eventmatch/{mine['uuid']}"
    assert requests.get(path, headers=BOB, timeout=10).status_code == 404
    assert requests.put(path, json={"name": "x"}, headers=BOB, timeout=10).status_code == 404
    assert requests.delete(path, headers=BOB, timeout=10).status_code == 404
    assert requests.get(f"{service.url}/eventmatch", headers=BOB, timeout=10).json() == []
    assert requests.get(f"{service.url}/eventmatch", timeout=10).status_code == 401
    assert (
        requests.get(f"{service.url}/eventmatch/1234", headers=ALICE, timeout=10).status_code == 400
    )
    bad_path = requests.post(
        f"{service.url}/eventmatch",
        json={"name": "b", "jsonpath": "$[?(", "target_url": "http://e.org"},
        headers=ALICE,
        timeout=10,
    )
    assert bad_path.status_code == 400
    assert "jsonpath" in bad_path.json()["message"]
    no_url = requests.post(
        f"{service.url}/eventmatch", json={"name": "b", "jsonpath": "$"}, headers=ALICE, timeout=10
    )
    assert (no_url.status_code, "'target_url'" in no_url.json()["message"]) == (400, True)


def test_event_reaches_two_matching_subscriptions_with_their_auth_and_not_a_third(
    service: Deployment, target: HTTPRecorder, load_json: LoadJson
) -> None:
    subscribe(
        service,
        {
            "name": "basic",
            "jsonpath": '$.data.*[?(@.value="Blah")].value',
            "target_url": f"{target.url}/basic",
            "auth": {"type": "basic", "basic": {"username": "u", "password": "p"}},
            "extensions": {"fromSubscription": "yes"},
        },
    )
    subscribe(
        service,
        {
            "name": "header",
            "jsonpath": '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]',
            "target_url": f"{target.url}/header",
            "auth": {"type": "header", "header": {"type": "Bearer", "credentials": "tok"}},
        },
    )
    subscribe(
        service,
        {
            "name": "other",
            "jsonpath": '$[?(@["eventType"] = "nope")]',
            "target_url": f"{target.url}/other",
        },
    )
    task_id = service.post(pacifica_event("two-of-three", load_json)).json()
    wait_for(lambda: target.at("/basic") and target.at("/header"), 30, what="both deliveries")
    [basic] = target.at("/basic")
    assert basic.headers["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    assert basic.json()["extensions"] == {"comExampleExtension": "value", "fromSubscription": "yes"}
    assert basic.json()["eventID"] == "two-of-three"
    assert target.at("/header")[0].headers["Authorization"] == "Bearer tok"
    service.wait_status(task_id, "200 OK")
    assert target.at("/other") == []
    assert len(target.at("/basic")) == 1
    assert {d["status"] for d in deliveries_of(service, task_id)} == {"DELIVERED"}


def test_signed_delivery_verifies_at_the_target(
    service: Deployment, target: HTTPRecorder, load_json: LoadJson
) -> None:
    created = subscribe(
        service,
        {"name": "s", "jsonpath": "$", "target_url": f"{target.url}/signed", "secret": True},
    )
    service.post(pacifica_event("signed", load_json))
    [received] = wait_for(lambda: target.at("/signed"), 30, what="the signed delivery")
    key = base64.b64decode(created["secret"].removeprefix("whsec_"))
    content = b".".join(
        [
            received.headers["webhook-id"].encode(),
            received.headers["webhook-timestamp"].encode(),
            received.body,
        ]
    )
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert received.headers["webhook-signature"] == f"v1,{expected}"
    assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60


def test_target_failing_three_times_is_delivered_once_after_four_attempts(
    service: Deployment, target: HTTPRecorder, load_json: LoadJson
) -> None:
    target.behaviour["/flaky"] = Behaviour(fail=3)
    subscribe(service, {"name": "f", "jsonpath": "$", "target_url": f"{target.url}/flaky"})
    task_id = service.post(pacifica_event("flaky", load_json)).json()

    def delivered() -> list[dict[str, Any]]:
        return [d for d in deliveries_of(service, task_id) if d["status"] == "DELIVERED"]

    [done] = wait_for(delivered, 60, 0.5, "the flaky delivery")
    assert [a["status"] for a in done["log"] if a["kind"] == "target"] == [503, 503, 503, 200]
    assert done["attempts"] == 4
    assert len(target.at("/flaky")) == 4


def test_target_down_past_the_budget_is_dead_lettered_then_disabled(
    service: Deployment, target: HTTPRecorder, load_json: LoadJson
) -> None:
    target.behaviour["/down"] = Behaviour(status=503)
    created = subscribe(service, {"name": "d", "jsonpath": "$", "target_url": f"{target.url}/down"})
    first = service.post(pacifica_event("down-1", load_json)).json()
    wait_for(lambda: deliveries_of(service, first)[0]["status"] == "DEAD", 60, 0.5, "a dead letter")
    sub = requests.get(
        f"{service.url}/eventmatch/{created['uuid']}", headers=ALICE, timeout=10
    ).json()
    assert sub["disabled"] is None  # never on the first dead letter
    second = service.post(pacifica_event("down-2", load_json)).json()
    wait_for(
        lambda: deliveries_of(service, second)[0]["status"] == "DEAD",
        60,
        0.5,
        "a second dead letter",
    )
    sub = requests.get(
        f"{service.url}/eventmatch/{created['uuid']}", headers=ALICE, timeout=10
    ).json()
    assert sub["disabled"] is not None
    assert "503" in sub["error"]
    target.behaviour["/down"] = Behaviour(status=200)
    retried = service.cli("events", "retry", second)
    assert retried.returncode == 0, retried.stderr
    # Retrying while disabled cancels; re-enable, retry again, and it is delivered.
    requests.put(
        f"{service.url}/eventmatch/{created['uuid']}",
        json={"disabled": None},
        headers=ALICE,
        timeout=10,
    )
    wait_for(
        lambda: deliveries_of(service, second)[0]["status"] != "PENDING",
        30,
        0.5,
        "the retry to settle",
    )
    assert service.cli("events", "retry", second).returncode == 0
    wait_for(
        lambda: deliveries_of(service, second)[0]["status"] == "DELIVERED", 30, 0.5, "redelivery"
    )


def test_policy_4xx_is_not_delivered_and_5xx_is_retried(
    service: Deployment, target: HTTPRecorder, policy: HTTPRecorder, load_json: LoadJson
) -> None:
    policy.behaviour["/events/dmlb2001"] = Behaviour(status=403)
    policy.behaviour["/events/bob"] = Behaviour(fail=2)
    subscribe(service, {"name": "p", "jsonpath": "$", "target_url": f"{target.url}/alice"})
    subscribe(
        service, {"name": "p", "jsonpath": "$", "target_url": f"{target.url}/bob"}, headers=BOB
    )
    task_id = service.post(pacifica_event("policy", load_json)).json()
    wait_for(lambda: target.at("/bob"), 60, what="bob's delivery after policy 5xx")
    assert len(policy.at("/events/bob")) == 3
    assert policy.at("/events/dmlb2001")[0].json()["eventID"] == "policy"
    statuses = sorted((d["status"], d["policy"]) for d in deliveries_of(service, task_id))
    assert statuses == [("DELIVERED", 200), ("REJECTED", 403)]
    assert target.at("/alice") == []


def test_subscription_changes_are_picked_up_by_the_running_worker(
    service: Deployment, target: HTTPRecorder, load_json: LoadJson
) -> None:
    created = subscribe(
        service,
        {"name": "c", "jsonpath": '$[?(@["eventType"] = "nope")]', "target_url": f"{target.url}/c"},
    )
    first = service.post(pacifica_event("before-change", load_json)).json()
    service.wait_status(first, "422 Unprocessable Entity")
    requests.put(
        f"{service.url}/eventmatch/{created['uuid']}",
        json={"jsonpath": '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]'},
        headers=ALICE,
        timeout=10,
    )
    service.post(pacifica_event("after-change", load_json))
    [received] = wait_for(lambda: target.at("/c"), 30, what="delivery after the change")
    assert received.json()["eventID"] == "after-change"
    requests.delete(f"{service.url}/eventmatch/{created['uuid']}", headers=ALICE, timeout=10)
    gone = service.post(pacifica_event("after-delete", load_json)).json()
    service.wait_status(gone, "422 Unprocessable Entity")
    assert len(target.at("/c")) == 1


def test_upstream_notifications_test_event_and_subscription(
    service: Deployment, target: HTTPRecorder, load_json: LoadJson
) -> None:
    subscribe(
        service,
        {
            "name": "testevent",
            "jsonpath": '$.data.*[?(@.value="Blah")].value',
            "target_url": f"{target.url}/upstream",
            "auth": {"type": "basic", "basic": {"username": "u", "password": "p"}},
        },
    )
    task_id = service.post(load_json("notifications_events.json")).json()
    [received] = wait_for(lambda: target.at("/upstream"), 30, what="the upstream test event")
    assert received.json()["data"] == load_json("notifications_events.json")["data"]
    service.wait_status(task_id, "200 OK")
    purged = service.cli("events", "purge", "--older-than", "2999-01-01")
    assert purged.returncode == 0, purged.stderr
    assert service.cli("events", "get", task_id).returncode != 0


def test_pacifica_notifications_server_delivers_with_an_upstream_config_ini(
    deployments: Callable[..., Deployment],
    target: HTTPRecorder,
    load_json: LoadJson,
    tmp_path: Path,
) -> None:
    """The drop-in ``pacifica-notifications`` on its embedded broker, configured the upstream way.

    Its database comes from the upstream ``config.ini`` only, so the worker it
    starts must be given the same settings, or it would look in another database.
    """
    deployment = deployments()
    config = tmp_path / "notifications.ini"
    database = tmp_path / "notifications.sqlite3"
    config.write_text(f"[database]\npeewee_url = sqliteext:///{database}\n", encoding="utf-8")
    scripts = Path(sys.executable).parent
    synced = subprocess.run(
        [str(scripts / "pacifica-notifications-cmd"), "-c", str(config), "dbsync"],
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert synced.returncode == 0, synced.stderr
    command = [str(scripts / "pacifica-notifications"), "-c", str(config)]
    command += ["-p", str(deployment.port), "-a", "127.0.0.1"]
    deployment.start_http("notifications", command)
    subscribe(
        deployment,
        {"name": "all", "jsonpath": "$.data", "target_url": f"{target.url}/notified"},
    )
    task_id = deployment.post(pacifica_event("compat-1", load_json)).json()
    [received] = wait_for(lambda: target.at("/notified"), 60, what="the delivery")
    assert received.json()["eventID"] == "compat-1"
    deployment.wait_status(task_id, "200 OK")
    assert database.exists()
