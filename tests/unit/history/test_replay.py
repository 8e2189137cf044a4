"""Replays to a subscription: selection, schedule, idempotence, the replay header, HTTP access."""

from __future__ import annotations

import itertools
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import peewee
import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.history import replay
from pacifica.dispatcher.history.dryrun import Selection
from pacifica.dispatcher.service.outbox import delivery_outbox, event_outbox
from pacifica.dispatcher.service.web import EventMatch, create_app
from pacifica.dispatcher.storage import deliveries, pacing, replays
from pacifica.dispatcher.storage.schema import Delivery
from pacifica.dispatcher.storage.subscriptions import insert_subscription
from pacifica.dispatcher.storage.values import DeliveryStatus, utcnow
from pacifica.dispatcher.subscriptions.delivery import target_request
from tests.conftest import WSGIClient
from tests.unit.history.test_dryrun import ALICE, BOB, FILES, START, metadata_events  # noqa: F401

SUBSCRIPTION = {"name": "files", "jsonpath": FILES, "target_url": "http://example.com/hook"}


def test_plan_selects_matching_events_in_the_range_oldest_first(
    metadata_events: list[uuid.UUID],  # noqa: F811
) -> None:
    subscription = insert_subscription("alice", SUBSCRIPTION)
    since, until = START + timedelta(seconds=3), START + timedelta(seconds=20)
    chosen = replay.plan(subscription, Selection(last=None, since=since, until=until), None)
    assert chosen.events == [metadata_events[n] for n in (3, 6, 9, 12, 15, 18)]
    every = replay.plan(subscription, Selection(last=None, since=since, until=until), "$")
    assert every.events == metadata_events[3:20]


def test_replay_schedules_at_the_rate_and_marks_deliveries_as_replays(
    metadata_events: list[uuid.UUID],  # noqa: F811
) -> None:
    subscription = insert_subscription("alice", SUBSCRIPTION)
    deliveries.record_matches(metadata_events[0], [str(subscription.uuid)])  # the original
    selection = Selection(last=None, since=START)
    chosen = replay.plan(subscription, selection, None)
    key = replay.start(subscription, selection, chosen, "alice", rate=4.0)
    rows = list(Delivery.select().where(Delivery.replay == key).order_by(Delivery.next_attempt))
    # the original delivery is a second row, outside the replay
    assert [r.event_id for r in rows] == chosen.events  # type: ignore[attr-defined]  # FK id
    gaps = {
        round((b.next_attempt - a.next_attempt).total_seconds(), 3)
        for a, b in itertools.pairwise(rows)
    }
    assert gaps == {0.25}
    progress = replays.progress(key)
    assert progress is not None
    assert (progress.total, progress.pending, progress.done) == (10, 10, False)
    job = deliveries.claim(rows[0].id, 30, utcnow())
    assert job is not None
    assert job.replay == key
    request = target_request(job.subscription, str(job.uuid), job.document, job.replay)
    assert request["headers"]["webhook-replay"] == str(key)
    assert "webhook-replay" not in target_request(job.subscription, "x", job.document)["headers"]


def test_pump_publishes_only_what_is_due_and_each_once(
    metadata_events: list[uuid.UUID],  # noqa: F811
) -> None:
    subscription = insert_subscription("alice", SUBSCRIPTION)
    selection = Selection(last=None, since=START)
    key = replay.start(
        subscription, selection, replay.plan(subscription, selection, None), "a", 1000.0
    )
    published: list[int] = []
    stop = threading.Event()

    def publish(ids: list[int], delay: float) -> list[int]:
        published.extend(ids)
        Delivery.update(status=int(DeliveryStatus.DELIVERED)).where(Delivery.id.in_(ids)).execute()
        return ids

    final = replay.pump(
        key, replay.Publishers(event_outbox(nothing, 60), delivery_outbox(publish)), stop=stop
    )
    assert final.done
    assert final.delivered == 10
    assert sorted(published) == sorted(set(published))
    assert len(published) == 10
    assert pacing.active() == []  # nothing left to publish: the workers stop looking


def nothing(keys: list[str], delay: float) -> list[str]:
    raise AssertionError("a subscription replay publishes no event")


@pytest.fixture
def client(sqlite_db: peewee.Database, tmp_path: Path) -> WSGIClient:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    return WSGIClient(create_app(settings, lambda events: [], {"eventmatch": EventMatch(settings)}))


def post_replay(client: WSGIClient, key: str, body: Any, headers: dict[str, str]) -> Any:
    return client.request("POST", f"/eventmatch/{key}/replay", body, headers=headers)


def test_http_replay_dry_run_then_replay_for_the_owner_only(
    client: WSGIClient,
    metadata_events: list[uuid.UUID],  # noqa: F811
) -> None:
    created = client.request("POST", "/eventmatch", SUBSCRIPTION, headers=ALICE).json()
    body = {"since": START.isoformat(), "rate": 5, "dry_run": True}
    dry = post_replay(client, created["uuid"], body, ALICE)
    assert dry.status == 200, dry.body
    assert (dry.json()["events"], dry.json()["replay"], dry.json()["seconds"]) == (10, None, 2.0)
    assert Delivery.select().count() == 0
    assert post_replay(client, created["uuid"], body, BOB).status == 404
    done = post_replay(client, created["uuid"], {**body, "dry_run": False}, ALICE).json()
    progress = replays.progress(done["replay"])
    assert progress is not None
    assert progress.total == 10


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"since": "yesterday"},
        {"since": START.isoformat(), "rate": 0},
        {"since": START.isoformat(), "rate": 1000},
        {"since": START.isoformat(), "rate": "fast"},
        {"since": START.isoformat(), "jsonpath": "$["},
        {"since": START.isoformat(), "colour": "red"},
    ],
)
def test_http_replay_refuses_bad_input_with_400(
    client: WSGIClient, sqlite_db: peewee.Database, body: Any
) -> None:
    created = client.request("POST", "/eventmatch", SUBSCRIPTION, headers=ALICE).json()
    assert post_replay(client, created["uuid"], body, ALICE).status == 400
