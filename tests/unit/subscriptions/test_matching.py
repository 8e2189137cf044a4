"""The matching index gives exactly the brute-force answer, and notices changes made elsewhere."""

from __future__ import annotations

import random
from typing import Any

import peewee
import pytest
from jsonpath2.path import Path

from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage.schema import Delivery, EventRecord
from pacifica.dispatcher.subscriptions import add_subscription_route, registry
from pacifica.dispatcher.subscriptions.matching import (
    WILDCARD,
    Guard,
    Matcher,
    MatchIndex,
    brute_force,
    guards,
)
from pacifica.dispatcher.testing import event_from_dict
from tests.conftest import LoadJson

TYPES = ["org.pacifica.metadata.ingest", "org.pacifica.metadata.orm", "other"]
SOURCES = ["/pacifica/metadata/ingest", "/pacifica/metadata/orm"]
TABLES = ["Transactions.instrument", "Transactions.project", "Files", "TransactionKeyValue"]
VALUES = [54, 54.0, "54", True, 1, None, "Blah", "text/plain", 0, False]
KEYS = ["destinationTable", "value", "mimetype", "key"]


def literal(rng: random.Random) -> str:
    value = rng.choice(VALUES + TABLES + TYPES)
    if value is None:
        return "null"
    if value is True or value is False:
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def condition(rng: random.Random, depth: int = 0) -> str:
    kind = rng.random()
    operand = rng.choice(["@", "$"]) if rng.random() < 0.2 else "@"
    key = rng.choice([*KEYS, "eventType", "type", "source"])
    if kind < 0.55 or depth > 1:
        op = rng.choice(["=", "=", "=", "!=", ">", "<="])
        left, right = f'{operand}["{key}"]', literal(rng)
        return f"{left} {op} {right}" if rng.random() < 0.8 else f"{right} {op} {left}"
    if kind < 0.75:
        return f"{condition(rng, depth + 1)} and {condition(rng, depth + 1)}"
    if kind < 0.85:
        return f"({condition(rng, depth + 1)}) or ({condition(rng, depth + 1)})"
    if kind < 0.92:
        return f"not ({condition(rng, depth + 1)})"
    return f'@["{key}"]'


def random_path(rng: random.Random) -> str:
    root = ""
    if rng.random() < 0.8:
        attribute = rng.choice(["eventType", "type", "source"])
        value = rng.choice(TYPES + SOURCES)
        root = f'[?(@["{attribute}"] = "{value}")]'
        if rng.random() < 0.4:
            root = f'[?(@["{attribute}"] = "{value}" and {condition(rng)})]'
    data = rng.choice(['["data"][*]', ".data.*", '["data"]', "..", '["data"][0]', '["data"][*,0]'])
    tail = rng.choice(["", f"[?({condition(rng)})]", f'[?({condition(rng)})]["value"]'])
    if data == "..":
        return f"${root}..value"
    return f"${root}{data}{tail}"


def random_event(rng: random.Random) -> dict[str, object]:
    items: list[object] = [
        {
            rng.choice(KEYS): rng.choice(VALUES + TABLES),
            rng.choice(KEYS): rng.choice(VALUES + TABLES),
        }
        for _ in range(rng.randint(0, 6))
    ]
    if rng.random() < 0.1:
        items.append([1, "Blah", {"value": 54}])
    if rng.random() < 0.5:
        return {
            "cloudEventsVersion": "0.1",
            "eventType": rng.choice(TYPES),
            "source": rng.choice(SOURCES),
            "eventID": "x",
            "data": items,
        }
    data: object = items if rng.random() < 0.8 else {"value": rng.choice(VALUES)}
    return {
        "specversion": "1.0",
        "type": rng.choice(TYPES),
        "source": rng.choice(SOURCES),
        "id": "x",
        "data": data,
    }


@pytest.mark.parametrize("seed", range(8))
def test_index_matches_exactly_what_brute_force_matches(seed: int) -> None:
    rng = random.Random(seed)
    entries = [(f"s{i}", Path.parse_str(random_path(rng))) for i in range(200)]
    index = MatchIndex.build(entries)
    assert len(index.always) < len(entries)  # the index does prune
    matched_any = 0
    for _ in range(120):
        event = random_event(rng)
        expected = brute_force(entries, event)
        assert index.match(event) == expected, event
        matched_any += bool(expected)
    assert matched_any > 10  # the generator produces events that do match


def test_pacifica_consumer_path_is_guarded_on_its_rarest_literal() -> None:
    path = Path.parse_str(
        '$[?(@["eventID"] and (@["eventType"] = "org.pacifica.metadata.ingest") and '
        '(@["source"] = "/pacifica/metadata/ingest"))]["data"][*]'
        '[?((@["destinationTable"] = "Files") and (@["mimetype"] = "text/plain"))]["_id"]'
    )
    assert set(guards(path)) == {
        frozenset({Guard((), "eventType", "org.pacifica.metadata.ingest")}),
        frozenset({Guard((), "source", "/pacifica/metadata/ingest")}),
        frozenset({Guard(("data", WILDCARD), "destinationTable", "Files")}),
        frozenset({Guard(("data", WILDCARD), "mimetype", "text/plain")}),
    }


def test_or_of_equalities_is_one_condition_with_either_guard() -> None:
    path = Path.parse_str('$[?(@["eventType"] = "a" or @["source"] = "b")]')
    assert guards(path) == [frozenset({Guard((), "eventType", "a"), Guard((), "source", "b")})]


@pytest.mark.parametrize(
    "text",
    [
        '$[?(@["eventType"] = "a" or @["source"] > 1)]',
        '$[?(not (@["eventType"] = "a"))]',
        '$..[?(@["value"] = 54)]',
        '$[?(@["eventType"] != "a")]',
    ],
)
def test_conditions_that_do_not_constrain_give_no_guard(text: str) -> None:
    assert guards(Path.parse_str(text)) == []


def test_upstream_test_subscription_matches_the_upstream_test_event(load_json: LoadJson) -> None:
    event = load_json("notifications_events.json")
    path = registry.compile_jsonpath('$.data.*[?(@.value="Blah")].value')
    index = MatchIndex.build([("upstream", path)])
    assert index.match(event) == ["upstream"]
    assert index.match({**event, "data": []}) == []


def test_reference_path_without_dollar_matches_events_with_data(load_json: LoadJson) -> None:
    path = registry.compile_jsonpath("data")
    assert MatchIndex.build([("ref", path)]).match(load_json("notifications_events.json")) == [
        "ref"
    ]


def test_matcher_sees_changes_made_through_the_registry(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    event = load_json("notifications_events.json")
    matcher = Matcher()
    assert matcher.match(event) == []
    created = registry.create(
        "u",
        {
            "name": "n",
            "jsonpath": '$[?(@.eventType = "org.pacifica.metadata.ingest")]',
            "target_url": "http://e.org",
        },
    )
    assert matcher.match(event) == [created["uuid"]]
    registry.update("u", created["uuid"], {"jsonpath": '$[?(@.eventType = "nope")]'})
    assert matcher.match(event) == []
    registry.update("u", created["uuid"], {"jsonpath": "$.data"})
    assert matcher.match(event) == [created["uuid"]]
    registry.delete("u", created["uuid"])
    assert matcher.match(event) == []


def test_matcher_skips_disabled_subscriptions(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    created = registry.create("u", {"name": "n", "jsonpath": "$", "target_url": "http://e.org"})
    registry.update("u", created["uuid"], {"disabled": "2020-01-01T00:00:00Z"})
    assert Matcher().match(load_json("notifications_events.json")) == []
    registry.update("u", created["uuid"], {"disabled": None})
    assert Matcher().match(load_json("notifications_events.json")) == [created["uuid"]]


def test_route_and_handler_match_an_event_once(
    sqlite_db: peewee.Database, load_json: LoadJson, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = registry.create("u", {"name": "n", "jsonpath": "$", "target_url": "http://e.org"})
    router = Router()
    route = add_subscription_route(router)
    evaluations: list[int] = []
    real_match = route.event_handler.matcher.match

    def counting_match(document: Any) -> list[str]:
        evaluations.append(1)
        return real_match(document)

    monkeypatch.setattr(route.event_handler.matcher, "match", counting_match)
    event = event_from_dict(load_json("notifications_events.json"))
    [accepted] = dispatch.accept([event])
    dispatch.process(accepted.uuid, router)
    assert len(evaluations) == 1
    assert EventRecord.select().count() == 1
    # peewee adds the foreign key's raw ``subscription_id`` accessor at runtime; its stubs lack it.
    assert [str(d.subscription_id) for d in Delivery.select()] == [created["uuid"]]  # type: ignore[attr-defined]
