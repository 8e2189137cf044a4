"""Delivery without a network: signing, backoff, classification, and the attempt state machine."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict, cast

import peewee
import pytest
import requests

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch, views
from pacifica.dispatcher.storage import DeliveryStatus, deliveries, utcnow
from pacifica.dispatcher.storage.schema import Delivery, DeliveryAttempt, Subscription
from pacifica.dispatcher.subscriptions import add_subscription_route, delivery, registry
from pacifica.dispatcher.subscriptions.delivery import (
    Outcome,
    Verdict,
    backoff_delay,
    classify_policy,
    classify_target,
)
from pacifica.dispatcher.testing import event_from_dict
from tests.conftest import LoadJson


class Matched(TypedDict):
    """What the ``matched`` fixture returns."""

    ids: list[int]
    subscription: dict[str, Any]
    router: Router
    task: str


@dataclass
class FakeResponse:
    status_code: int
    content: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def raw(self) -> FakeResponse:
        return self  # the answer is streamed (transport reads only its head)

    def stream(self, amount: int, decode_content: bool = True) -> Any:
        del decode_content
        return (self.content[i : i + amount] for i in range(0, len(self.content), amount))

    def close(self) -> None:
        pass


@dataclass
class FakeSession:
    """Answers POSTs from a script: an int is a status code, an exception is raised."""

    script: list[Any]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append({"url": url, **kwargs})
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step if isinstance(step, FakeResponse) else FakeResponse(step)


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """An independent Standard Webhooks verification, as a receiver would write it."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}"
    expected = base64.b64encode(hmac.new(key, content.encode(), hashlib.sha256).digest()).decode()
    return any(sig.split(",", 1)[1] == expected for sig in headers["webhook-signature"].split(" "))


def test_signature_verifies_with_an_independent_implementation() -> None:
    secret = registry.new_secret()
    body = json.dumps({"héllo": "wörld"}, ensure_ascii=False).encode()
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000"}
    headers["webhook-signature"] = delivery.sign(secret, "msg_1", 1700000000, body)
    assert headers["webhook-signature"].startswith("v1,")
    assert verify_standard_webhook(secret, headers, body)
    assert not verify_standard_webhook(secret, headers, body + b" ")


def test_backoff_doubles_with_full_jitter_and_is_capped_at_an_hour() -> None:
    assert [backoff_delay(n, 2.0, rand=lambda: 1.0) for n in range(1, 6)] == [2, 4, 8, 16, 32]
    assert backoff_delay(30, 2.0, rand=lambda: 1.0) == 3600
    assert backoff_delay(3, 2.0, rand=lambda: 0.25) == 2.0
    assert backoff_delay(1000, 2.0, rand=lambda: 1.0) == 3600


@pytest.mark.parametrize(
    ("code", "target", "policy"),
    [
        (200, Verdict.OK, Verdict.OK),
        (204, Verdict.OK, Verdict.OK),
        (None, Verdict.RETRY, Verdict.RETRY),
        (500, Verdict.RETRY, Verdict.RETRY),
        (503, Verdict.RETRY, Verdict.RETRY),
        (408, Verdict.RETRY, Verdict.REFUSED),
        (429, Verdict.RETRY, Verdict.REFUSED),
        (404, Verdict.REFUSED, Verdict.REFUSED),
        (401, Verdict.REFUSED, Verdict.REFUSED),
        (301, Verdict.REFUSED, Verdict.RETRY),
    ],
)
def test_outcome_classification(code: int | None, target: Verdict, policy: Verdict) -> None:
    assert (classify_target(code), classify_policy(code)) == (target, policy)


def test_legacy_event_gets_extensions_merged_as_upstream(load_json: LoadJson) -> None:
    kind, body = delivery.payload(load_json("notifications_events.json"), {"mine": 1})
    assert kind == "application/json"
    assert json.loads(body)["extensions"] == {"comExampleExtension": "value", "mine": 1}


def test_v1_event_gets_extensions_as_attributes_without_overriding_its_own() -> None:
    event = {"specversion": "1.0", "id": "1", "type": "t", "source": "s", "data": {}}
    kind, body = delivery.payload(event, {"Team": "x", "type": "evil"})
    sent = json.loads(body)
    assert kind == "application/cloudevents+json"
    assert (sent["team"], sent["type"], sent["xtype"]) == ("x", "t", "evil")


# --- the attempt state machine ---------------------------------------------------------------


def settings_for(tmp_path: Path, **env: str) -> Settings:
    base = {"DISPATCHER_DATA_DIR": str(tmp_path), "DELIVERY_BACKOFF": "1", "DISABLE_AFTER": "2"}
    return Settings.from_env({**base, **env})


@pytest.fixture
def matched(sqlite_db: peewee.Database, load_json: LoadJson) -> Matched:
    """One stored event matched by one subscription, through the real handler; returns delivery ids."""
    created = registry.create(
        "dmlb2001",
        {
            "name": "n",
            "jsonpath": '$.data.*[?(@.value="Blah")].value',
            "target_url": "http://target.test/hook",
            "auth": {"type": "basic", "basic": {"username": "u", "password": "p"}},
            "extensions": {"mine": "yes"},
            "secret": True,
        },
    )
    sent: list[int] = []
    router = Router()
    add_subscription_route(router)
    [accepted] = dispatch.accept([event_from_dict(load_json("notifications_events.json"))])
    dispatch.process(accepted.uuid, router, send_deliveries=sent.extend)
    return {"ids": sent, "subscription": created, "router": router, "task": accepted.uuid}


def run_if_due(
    matched: Matched,
    settings: Settings,
    session: FakeSession,
    rand: Callable[[], float] = lambda: 0.0,
) -> Outcome | None:
    """One attempt at the matched delivery; None when it is not due or is finished."""
    # FakeSession stands in for requests.Session: attempt() only calls its post().
    return delivery.attempt(matched["ids"][0], settings, cast(requests.Session, session), rand=rand)


def run(
    matched: Matched,
    settings: Settings,
    session: FakeSession,
    rand: Callable[[], float] = lambda: 0.0,
) -> Outcome:
    """One attempt at the matched delivery, which is due."""
    outcome = run_if_due(matched, settings, session, rand)
    assert outcome is not None
    return outcome


def test_handler_creates_one_delivery_per_match_even_when_the_event_runs_again(
    matched: Matched,
) -> None:
    assert len(matched["ids"]) == 1
    dispatch.reset_for_retry([matched["task"]])
    dispatch.process(matched["task"], matched["router"])
    assert Delivery.select().count() == 1


def test_delivered_with_auth_extensions_and_a_verifiable_signature(
    matched: Matched, tmp_path: Path
) -> None:
    session = FakeSession([200])
    outcome = run(matched, settings_for(tmp_path), session)
    assert outcome.status is DeliveryStatus.DELIVERED
    [call] = session.calls
    assert call["url"] == "http://target.test/hook"
    assert call["auth"] == ("u", "p")
    assert call["timeout"] == 30.0
    assert json.loads(call["data"])["extensions"]["mine"] == "yes"
    secret = Subscription.get().secret
    assert secret is not None
    assert verify_standard_webhook(secret, call["headers"], call["data"])


def test_policy_is_asked_first_and_a_4xx_rejects_without_retry(
    matched: Matched, tmp_path: Path
) -> None:
    session = FakeSession([FakeResponse(403, b'{"message": "not allowed"}')])
    settings = settings_for(tmp_path, POLICY_URL="http://policy.test/")
    outcome = run(matched, settings, session)
    assert outcome.status is DeliveryStatus.REJECTED
    assert session.calls[0]["url"] == "http://policy.test/events/dmlb2001"
    row = Delivery.get()
    assert (row.policy_status, row.policy_body) == (403, '{"message": "not allowed"}')
    assert len(session.calls) == 1
    assert Subscription.get().disabled is None


def test_policy_5xx_is_retried_and_not_asked_again_once_it_said_yes(
    matched: Matched, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, POLICY_URL="http://policy.test")
    session = FakeSession([500, 200, 200])
    assert run(matched, settings, session).status is DeliveryStatus.PENDING
    assert run(matched, settings, session).status is DeliveryStatus.DELIVERED
    kinds = [a.kind for a in DeliveryAttempt.select().order_by(DeliveryAttempt.id)]
    assert kinds == ["policy", "policy", "target"]
    assert run_if_due(matched, settings, session) is None  # delivered: nothing more to do


def test_target_failing_three_times_then_succeeding_is_delivered_once(
    matched: Matched, tmp_path: Path
) -> None:
    session = FakeSession([503, requests.ConnectionError("refused"), 429, 200])
    settings = settings_for(tmp_path)
    statuses = [run(matched, settings, session).status for _ in range(4)]
    assert statuses[-1] is DeliveryStatus.DELIVERED
    attempts = list(DeliveryAttempt.select().order_by(DeliveryAttempt.id))
    assert [(a.number, a.status_code) for a in attempts] == [
        (1, 503),
        (2, None),
        (3, 429),
        (4, 200),
    ]
    assert attempts[1].error is not None
    assert "ConnectionError" in attempts[1].error
    assert Delivery.get().attempts == 4


def test_retry_waits_for_its_backoff(matched: Matched, tmp_path: Path) -> None:
    session, settings = FakeSession([503]), settings_for(tmp_path, DELIVERY_BACKOFF="10")
    outcome = run(matched, settings, session, rand=lambda: 1.0)
    assert outcome.retry_in == 10.0
    assert run_if_due(matched, settings, session) is None  # not due yet
    assert Delivery.get().next_attempt > utcnow()


def test_target_4xx_fails_without_retry(matched: Matched, tmp_path: Path) -> None:
    outcome = run(matched, settings_for(tmp_path), FakeSession([404]))
    assert outcome.status is DeliveryStatus.FAILED
    assert Delivery.get().error == "target answered 404"


def test_dead_letter_after_max_attempts_and_disable_after_the_configured_count(
    matched: Matched, tmp_path: Path, load_json: LoadJson
) -> None:
    settings = settings_for(tmp_path, DELIVERY_MAX_ATTEMPTS="2")
    session = FakeSession([500])
    assert run(matched, settings, session).status is DeliveryStatus.PENDING
    assert run(matched, settings, session).status is DeliveryStatus.DEAD
    subscription = Subscription.get()
    assert (subscription.failures, subscription.disabled) == (1, None)  # never on the first
    second = {**load_json("notifications_events.json"), "eventID": "another"}
    [accepted] = dispatch.accept([event_from_dict(second)])
    dispatch.process(accepted.uuid, matched["router"], send_deliveries=matched["ids"].extend)
    other = matched["ids"][-1]
    for _ in range(2):
        delivery.attempt(other, settings, cast(requests.Session, session), rand=lambda: 0.0)
    subscription = Subscription.get()
    assert subscription.disabled is not None
    assert subscription.error is not None
    assert "500" in subscription.error


def test_dead_letter_after_max_age(matched: Matched, tmp_path: Path) -> None:
    Delivery.update(budget_start=utcnow() - timedelta(days=2)).execute()
    outcome = run(matched, settings_for(tmp_path), FakeSession([500]))
    assert outcome.status is DeliveryStatus.DEAD


def test_success_resets_the_failure_count(matched: Matched, tmp_path: Path) -> None:
    Subscription.update(failures=1).execute()
    run_if_due(matched, settings_for(tmp_path), FakeSession([200]))
    assert Subscription.get().failures == 0


def test_retry_resets_dead_deliveries_with_a_fresh_budget(matched: Matched, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, DELIVERY_MAX_ATTEMPTS="1")
    assert run(matched, settings, FakeSession([500])).status is DeliveryStatus.DEAD
    # peewee adds the foreign key's raw ``event_id`` accessor at runtime; its stubs lack it.
    [event] = {d.event_id for d in Delivery.select()}  # type: ignore[attr-defined]
    assert deliveries.reset_for_retry([event]) == matched["ids"]
    assert run(matched, settings, FakeSession([200])).status is DeliveryStatus.DELIVERED
    assert len(views.describe_deliveries(dispatch.get_event(str(event)))[0]["log"]) == 2


def test_a_lost_message_is_found_by_the_sweep(matched: Matched) -> None:
    Delivery.update(next_attempt=utcnow() - timedelta(seconds=60), enqueued=None).execute()
    assert deliveries.claim_overdue(grace=30) == matched["ids"]
    assert deliveries.claim_overdue(grace=30) == []  # claimed once


def test_deleted_subscription_cancels_its_pending_delivery(
    matched: Matched, tmp_path: Path
) -> None:
    registry.delete("dmlb2001", matched["subscription"]["uuid"])
    assert (
        run(matched, settings_for(tmp_path), FakeSession([200])).status is DeliveryStatus.CANCELLED
    )


def test_event_no_subscription_matches_stays_unrouted(
    matched: Matched, load_json: LoadJson
) -> None:
    other = {**load_json("notifications_events.json"), "eventID": "no-blah", "data": []}
    [accepted] = dispatch.accept([event_from_dict(other)])
    assert (
        dispatch.process(
            accepted.uuid, matched["router"], send_deliveries=matched["ids"].extend
        ).http
        == "422 Unprocessable Entity"
    )
    assert Delivery.select().count() == 1
