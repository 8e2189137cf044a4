"""Issue 12, in-process: hostile or careless input gets a JSON 400, never a 500 or a surprise.

Findings covered here: 9 (500 instead of 400), 4 (outgoing address policy at
create time), 10 (secrets in target URLs), 7 (user names are exact) and 6 (a
success resets the consecutive-failure count). The HTTP edge is called through
the in-process WSGI client; delivery goes through ``delivery.attempt`` with a
real ``requests`` session against ``StubServer`` targets on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.intake import Intake
from pacifica.dispatcher.service.web import EventMatch, create_app
from pacifica.dispatcher.storage.schema import Delivery
from pacifica.dispatcher.subscriptions import delivery
from pacifica.dispatcher.subscriptions.route import SubscriptionHandler, add_subscription_route
from pacifica.dispatcher.testing import event_from_dict
from tests.conftest import StubRequest, StubServer, WSGIClient, WSGIResponse, outbox_of

REPO = Path(__file__).resolve().parents[2]
ALICE = {"Http-Remote-User": "alice"}
JSON = {"Content-Type": "application/json"}
LOOPBACK_ALLOWED = {"ALLOWED_TARGET_NETWORKS": "127.0.0.0/8"}  # issue 12's new setting
pytestmark = pytest.mark.usefixtures("sqlite_db")


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), **env})


def api(tmp_path: Path, **env: str) -> WSGIClient:
    """The receiver, status API and /eventmatch, as the stand-alone service mounts them."""
    settings = settings_for(tmp_path, **env)
    return WSGIClient(
        create_app(
            settings,
            Intake(outbox_of(lambda ids: ids)).submit,
            {"eventmatch": EventMatch(settings)},
        )
    )


@pytest.fixture
def client(tmp_path: Path) -> WSGIClient:
    return api(tmp_path)


def names(message: str, *candidates: str) -> bool:
    """True when the message names one of the candidates as a word (``id`` is not in ``valid``)."""
    return any(
        re.search(rf"(?<![A-Za-z]){re.escape(c)}(?![A-Za-z])", message, re.IGNORECASE)
        for c in candidates
    )


def assert_json_400(response: WSGIResponse, *named: str) -> None:
    """A 400 whose body is the documented ``{"status", "message"}`` naming what is wrong."""
    assert response.status == 400, (response.status, response.body[:300])
    assert response.headers.get("Content-Type", "").startswith("application/json")
    payload = response.json()
    assert set(payload) == {"status", "message"}, payload
    assert payload["status"].startswith("400")
    assert names(payload["message"], *named), (named, payload["message"])
    assert "Traceback" not in payload["message"]


def subscription(**changes: Any) -> dict[str, Any]:
    return {"name": "n", "jsonpath": "$", "target_url": "http://example.org/hook", **changes}


def with_lone_surrogate(document: dict[str, Any], key: str) -> bytes:
    """The document as JSON with ``key``'s value an escaped lone surrogate (valid JSON text)."""
    marker = "LONE-SURROGATE-MARKER"
    text = json.dumps({**document, key: marker})
    return text.replace(f'"{marker}"', '"\\ud800"').encode()


# --- finding 9: 400, not 500 ---------------------------------------------------------------

V1 = {"specversion": "1.0", "id": "e-1", "type": "org.example.t", "source": "/tests"}
LEGACY = {"cloudEventsVersion": "0.1", "eventID": "e-1", "eventType": "t", "source": "/tests"}


@pytest.mark.parametrize(
    ("document", "attribute", "named"),
    [
        (V1, "id", ("id",)),
        (V1, "type", ("type",)),
        (V1, "source", ("source",)),
        (V1, "subject", ("subject",)),
        (V1, "comexampleext", ("comexampleext",)),
        (LEGACY, "eventID", ("eventID", "id")),
    ],
)
def test_lone_surrogate_in_an_event_attribute_is_400(
    client: WSGIClient, document: dict[str, Any], attribute: str, named: tuple[str, ...]
) -> None:
    """Today 500: the UTF-8 encoding for the database raises UnicodeEncodeError."""
    response = client.post("/receive", with_lone_surrogate(document, attribute), headers=JSON)
    assert_json_400(response, *named)


def test_lone_surrogate_in_a_subscription_name_is_400(client: WSGIClient) -> None:
    body = with_lone_surrogate(subscription(), "name")
    assert_json_400(client.post("/eventmatch", body, headers={**ALICE, **JSON}), "name")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=1&limit=2", "limit"),  # CherryPy passes a list
        (f"offset={2**64}", "offset"),  # the database cannot bind it
        ("limit=%C2%B2", "limit"),  # '²'.isdigit() is True, int('²') raises
    ],
)
def test_bad_listing_parameters_are_400(client: WSGIClient, query: str, named: str) -> None:
    assert_json_400(client.get(f"/?{query}"), named)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("id", "i" * 256), ("type", "t" * 256), ("source", "s" * 1025)],
)
def test_attribute_over_its_column_length_is_400_on_every_database(
    client: WSGIClient, attribute: str, value: str
) -> None:
    """Today 202 on SQLite (no length check; only PostgreSQL refuses, with a 500)."""
    assert_json_400(client.post("/receive", {**V1, attribute: value}), attribute)


def test_nul_in_an_event_id_is_400(client: WSGIClient) -> None:
    assert_json_400(client.post("/receive", {**V1, "id": "a\x00b"}), "id")


def test_nul_in_a_subscription_name_is_400(client: WSGIClient) -> None:
    assert_json_400(client.post("/eventmatch", subscription(name="a\x00b"), headers=ALICE), "name")


def test_nul_in_the_user_is_400(client: WSGIClient) -> None:
    response = client.post("/eventmatch", subscription(), headers={"Http-Remote-User": "al\x00ice"})
    assert_json_400(response, "Http-Remote-User", "user")


# --- finding 4: outgoing address policy at create time --------------------------------------

INTERNAL_TARGETS = [
    # (target_url, a network that allows it, or None when the name cannot be allowed here)
    ("http://127.0.0.1:8080/hook", "127.0.0.0/8"),
    ("http://localhost:8080/hook", None),
    ("http://0.0.0.0:8080/hook", None),
    ("http://[::1]:8080/hook", "::1/128"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.0.0/16"),
    ("http://10.0.0.1/hook", "10.0.0.0/8"),
    ("http://192.168.1.1/hook", "192.168.0.0/16"),
    ("http://metadata.google.internal/computeMetadata/v1/", None),
    ("http://2130706433/hook", "127.0.0.0/8"),
    ("http://0x7f000001/hook", "127.0.0.0/8"),
    ("http://127.1/hook", "127.0.0.0/8"),
]


@pytest.mark.parametrize(("target_url", "network"), INTERNAL_TARGETS)
def test_internal_target_is_refused_unless_an_allowed_network_covers_it(
    tmp_path: Path, target_url: str, network: str | None
) -> None:
    refused = api(tmp_path).post("/eventmatch", subscription(target_url=target_url), headers=ALICE)
    assert_json_400(refused, "target_url")
    if network is not None:
        allowing = api(tmp_path, ALLOWED_TARGET_NETWORKS=network)
        allowed = allowing.post("/eventmatch", subscription(target_url=target_url), headers=ALICE)
        assert allowed.status == 200, allowed.body


def test_credentials_in_the_target_url_are_refused_pointing_to_auth(tmp_path: Path) -> None:
    client = api(tmp_path, **LOOPBACK_ALLOWED)
    body = subscription(target_url="https://me:s3cret@hooks.example.org/in")
    response = client.post("/eventmatch", body, headers=ALICE)
    assert_json_400(response, "auth")
    assert "s3cret" not in response.body.decode()


# --- shared: match stored events to subscriptions and attempt their deliveries ---------------


def routed(sent: list[int]) -> Router:
    """The registry's route; ``deliveries_for`` collects its due deliveries in ``sent``."""
    del sent  # the due deliveries reach ``sent`` through the run context (deliveries_for)
    router = Router()
    handler = add_subscription_route(router).event_handler
    assert isinstance(handler, SubscriptionHandler)
    return router


def deliveries_for(router: Router, sent: list[int], *event_ids: str) -> list[int]:
    """Store and process one event per id; the delivery ids they made, in order."""
    for event_id in event_ids:
        document = {**V1, "id": event_id, "type": "org.example.hostile"}
        [accepted] = dispatch.accept([event_from_dict(document)])
        dispatch.process(accepted.uuid, router, send_deliveries=sent.extend)
    return list(sent)


@pytest.fixture
def stubs() -> Iterator[list[StubServer]]:
    started: list[StubServer] = []
    yield started
    for stub in started:
        stub.stop()


def start_stub(stubs: list[StubServer], respond: Callable[[StubRequest], None]) -> StubServer:
    stub = StubServer(respond).start()
    stubs.append(stub)
    return stub


# --- finding 10: a target's query string is never echoed ------------------------------------


def test_target_query_string_is_not_in_errors_or_events_get(
    tmp_path: Path, stubs: list[StubServer]
) -> None:
    """A refused connection's error today quotes the URL with its ``?token=``."""
    token = "tok-" + uuid.uuid4().hex
    closed = start_stub(stubs, lambda r: r.answer(200))
    closed_url = closed.url
    closed.stop()  # nothing listens there any more: the delivery gets "connection refused"
    env = {**LOOPBACK_ALLOWED, "DELIVERY_MAX_ATTEMPTS": "1", "DISABLE_AFTER": "1"}
    client = api(tmp_path, **env)
    created = client.post(
        "/eventmatch", subscription(target_url=f"{closed_url}/hook?token={token}"), headers=ALICE
    )
    assert created.status == 200, created.body
    sent: list[int] = []
    [delivery_id] = deliveries_for(routed(sent), sent, "query-string")
    outcome = delivery.attempt(delivery_id, settings_for(tmp_path, **env), requests.Session())
    assert outcome is not None
    shown = client.get(f"/eventmatch/{created.json()['uuid']}", headers=ALICE).json()
    assert shown["disabled"] is not None  # the one failure disabled it, with an error to show
    task_id = str(Delivery.get_by_id(delivery_id).event.uuid)
    database = f"sqlite:///{tmp_path / 'test.sqlite3'}"
    cli = subprocess.run(
        [sys.executable, "-m", "pacifica.dispatcher", "events", "get", task_id],
        env={**os.environ, "DATABASE_URL": database, "DISPATCHER_DATA_DIR": str(tmp_path)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["deliveries"][0]["status"] == "DEAD"
    shown_to_users = {"the subscription's error": shown["error"] or "", "events get": cli.stdout}
    leaks = {where: text for where, text in shown_to_users.items() if token in text}
    assert leaks == {}, f"the target's ?token= is shown in {sorted(leaks)}"


# --- finding 7: the user is exact -----------------------------------------------------------


@pytest.mark.parametrize("user", ["alice#mallory", "mallory/../alice"])
def test_policy_is_asked_about_exactly_this_user(
    tmp_path: Path, stubs: list[StubServer], user: str
) -> None:
    """Today the policy sees ``/events/alice`` for both: ``#`` starts a fragment, ``/../`` is resolved."""
    policy = start_stub(stubs, lambda r: r.answer(200))
    target = start_stub(stubs, lambda r: r.answer(200))
    created = api(tmp_path, **LOOPBACK_ALLOWED).post(
        "/eventmatch",
        subscription(target_url=f"{target.url}/hook"),
        headers={"Http-Remote-User": user},
    )
    if created.status in (400, 401):  # the other option: such names are refused
        assert names(created.json()["message"], "Http-Remote-User", "user")
        return
    assert created.status == 200, created.body
    sent: list[int] = []
    [delivery_id] = deliveries_for(routed(sent), sent, "policy-user")
    settings = settings_for(tmp_path, POLICY_URL=policy.url, **LOOPBACK_ALLOWED)
    delivery.attempt(delivery_id, settings, requests.Session())
    [asked] = policy.seen()
    assert asked.path.startswith("/events/"), asked.path
    segment = asked.path.removeprefix("/events/")
    assert "/" not in segment
    assert "#" not in segment
    assert unquote(segment) == user, asked.path


def test_user_header_is_read_as_utf8(client: WSGIClient) -> None:
    """WSGI hands header bytes over as Latin-1 text; today ``é`` is stored as ``Ã©``."""
    as_wsgi = "é".encode().decode("latin-1")
    created = client.post("/eventmatch", subscription(), headers={"Http-Remote-User": as_wsgi})
    assert created.status == 200, created.body
    assert created.json()["user"] == "é"


def test_user_is_not_trimmed(client: WSGIClient) -> None:
    """``" alice"`` is either refused or a user of its own; today it becomes ``alice``."""
    created = client.post("/eventmatch", subscription(), headers={"Http-Remote-User": " alice"})
    if created.status == 200:
        assert created.json()["user"] == " alice"
    else:
        assert_json_400(created, "Http-Remote-User", "user")
    assert client.get("/eventmatch", headers=ALICE).json() == []


# --- finding 6: a success resets the consecutive-failure count -------------------------------


def test_success_finishing_after_a_failure_resets_the_count(
    tmp_path: Path, stubs: list[StubServer]
) -> None:
    """A target alternating 400/200 (in the order the outcomes are recorded) is never disabled.

    Deliveries overlap as they do on several workers: d1 is in flight while
    d2, d3 and d4 run; d2 is in flight while d3 runs. Outcomes land as
    d3 400, d2 200, d4 400, d1 200, d5 400: never two failures in a row. Today
    a success resets the count only if the count it read before its attempt
    was not zero, so d2 and d1 reset nothing and d5 is the third "consecutive"
    failure: disabled with DISABLE_AFTER=3.
    """
    env = {**LOOPBACK_ALLOWED, "DISABLE_AFTER": "3", "REQUEST_TIMEOUT": "20"}
    settings = settings_for(tmp_path, **env)
    ids: dict[str, int] = {}
    order: list[tuple[str, int]] = []

    def attempt(name: str) -> None:
        outcome = delivery.attempt(ids[name], settings, requests.Session())
        assert outcome is not None, f"{name} was not attempted"

    during = {"d1": ["d2", "d4"], "d2": ["d3"]}
    status = {"d1": 200, "d2": 200, "d3": 400, "d4": 400, "d5": 400}

    def respond(request: StubRequest) -> None:
        name = str(request.json()["id"])
        for inner in during.get(name, []):
            attempt(inner)  # runs while this delivery is still in flight
        order.append((name, status[name]))
        request.answer(status[name])

    target = start_stub(stubs, respond)
    client = api(tmp_path, **env)
    created = client.post(
        "/eventmatch", subscription(target_url=f"{target.url}/alternating"), headers=ALICE
    )
    assert created.status == 200, created.body
    sent: list[int] = []
    made = deliveries_for(routed(sent), sent, "d1", "d2", "d3", "d4", "d5")
    ids.update(zip(["d1", "d2", "d3", "d4", "d5"], made, strict=True))
    attempt("d1")
    attempt("d5")
    assert [code for _, code in order] == [400, 200, 400, 200, 400], order
    shown = client.get(f"/eventmatch/{created.json()['uuid']}", headers=ALICE).json()
    assert (shown["disabled"], shown["error"]) == (None, None), shown
