"""Issue 12: what one user's subscription may cost the workers (JSONPath limits and budget,
deliveries in flight per target host)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import InvalidSubscriptionError
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage import DeliveryStatus, deliveries, utcnow
from pacifica.dispatcher.storage.schema import Delivery
from pacifica.dispatcher.subscriptions import add_subscription_route, delivery, registry
from pacifica.dispatcher.subscriptions.matching import Matcher
from pacifica.dispatcher.testing import event_from_dict

COSTLY = '$..*..*..*..*..*[?(@["never"]="matches")]'
# Within the create-time limits (two descents), still quadratic in the document's depth.
QUADRATIC = '$..*..*[?(@["never"]="matches")]'


def nested(depth: int) -> dict[str, Any]:
    document: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        document = {"a": document}
    return document


def body(**changes: Any) -> dict[str, Any]:
    return {"name": "n", "jsonpath": "$", "target_url": "http://target.test/hook", **changes}


@pytest.mark.parametrize(
    ("jsonpath", "limit"),
    [
        (COSTLY, "recursive descents"),
        ("$" + '[?(@["a"]' * 9 + " = 1" + ")]" * 9, "nests"),
        ('$["' + "k" * 1100 + '"]', "longer than"),
    ],
)
def test_costly_jsonpaths_are_refused_when_saved(
    sqlite_db: peewee.Database, jsonpath: str, limit: str
) -> None:
    with pytest.raises(InvalidSubscriptionError) as refused:
        registry.create("mallory", body(jsonpath=jsonpath))
    assert refused.value.field == "jsonpath"
    assert limit in str(refused.value)


def test_descents_inside_string_literals_do_not_count(sqlite_db: peewee.Database) -> None:
    created = registry.create("u", body(jsonpath='$[?(@["k"] = "a..b..c..d")]'))
    assert created["jsonpath"] == '$[?(@["k"] = "a..b..c..d")]'


def test_subscription_over_the_evaluation_budget_is_disabled_and_others_keep_matching(
    sqlite_db: peewee.Database,
) -> None:
    costly = registry.create("mallory", body(name="costly", jsonpath=QUADRATIC))
    fine = registry.create("bob", body(name="fine", jsonpath='$[?(@["type"] = "deep")]'))
    matcher = Matcher(budget=50_000)
    document = {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "deep",
        "data": nested(150),
    }
    assert matcher.match(document) == [fine["uuid"]]
    shown = registry.get("mallory", costly["uuid"])
    assert shown.disabled is not None
    assert shown.error is not None
    assert "JSONPATH_BUDGET" in shown.error
    assert matcher.match(document) == [fine["uuid"]]  # disabled: no longer evaluated
    assert Matcher(budget=None).match({**document, "data": nested(3)}) == [fine["uuid"]]


def test_a_host_holding_its_limit_defers_further_deliveries_without_counting_an_attempt(
    sqlite_db: peewee.Database, tmp_path: Path
) -> None:
    registry.create("u", body(jsonpath='$[?(@["type"] = "t")]'))
    sent: list[int] = []
    router = Router()
    add_subscription_route(router)
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    [accepted] = dispatch.accept([event_from_dict(event)])
    dispatch.process(accepted.uuid, router, send_deliveries=sent.extend)
    [delivery_id] = sent
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), "DELIVERY_HOST_LIMIT": "1"})
    now = utcnow()
    assert deliveries.take_host_slot("target.test:80", 999, 1, 60, now)  # another delivery's
    assert not deliveries.take_host_slot("target.test:80", 998, 1, 60, now)
    assert deliveries.take_host_slot("other.test:80", 998, 1, 60, now)

    class NoRequests:
        def post(self, **request: Any) -> Any:
            raise AssertionError("a busy host must not be called")

    outcome = delivery.attempt(delivery_id, settings, NoRequests())  # type: ignore[arg-type]
    assert outcome is not None
    assert outcome.status is DeliveryStatus.PENDING
    assert outcome.retry_in is not None
    row = Delivery.get_by_id(delivery_id)
    assert (row.attempts, row.lease_until) == (0, None)
    later = now + timedelta(seconds=61)  # the holder's lease ran out: the slot is free again
    assert deliveries.take_host_slot("target.test:80", 998, 1, 60, later)


def test_a_compiled_jsonpath_is_not_held_to_the_budget_on_a_large_event(
    sqlite_db: peewee.Database,
) -> None:
    # Its cost is bounded by the path's length times the event's size, so only JSONPaths
    # jsonpath2 interprets (recursive descent, unions, functions) count steps.
    simple = registry.create("bob", body(name="simple", jsonpath='$["data"][*][?(@["n"] = 4999)]'))
    document = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    large = {**document, "data": [{"n": n} for n in range(5000)]}
    assert Matcher(budget=10_000).match(large) == [simple["uuid"]]
    assert registry.get("bob", simple["uuid"]).disabled is None
