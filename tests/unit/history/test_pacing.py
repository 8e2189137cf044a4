"""Replay pacing: the schedule in the database is the throttle, whoever publishes, and after a
publisher's crash the rest goes at the replay's rate, not all at once."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta

import peewee

from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage import deliveries, events, pacing, replays, workers
from pacifica.dispatcher.storage.replays import NewReplay
from pacifica.dispatcher.storage.schema import EventRecord
from pacifica.dispatcher.storage.subscriptions import insert_subscription
from pacifica.dispatcher.storage.values import EventStatus, utcnow
from pacifica.dispatcher.testing import RecordingEventHandler, event_from_dict
from tests.conftest import LoadJson

RATE = 10.0


def failed_events(load_json: LoadJson, count: int) -> list[uuid.UUID]:
    """``count`` stored events whose route ``flaky`` failed."""
    router = Router()
    router.add_route('$["data"]', RecordingEventHandler(error=RuntimeError("no")), name="flaky")
    template = load_json("sop_example_event.json")
    received = [
        event_from_dict({**copy.deepcopy(template), "eventID": f"p{n}"}) for n in range(count)
    ]
    keys = [a.uuid for a in dispatch.accept(received)]
    for first in range(0, count, 100):
        dispatch.process_many(keys[first : first + 100], router)
    return [uuid.UUID(k) for k in keys]


def route_replay(keys: list[uuid.UUID], start: datetime) -> int:
    asked = NewReplay("route", "cli", RATE, route="flaky")
    key, chosen = replays.create_route_replay(asked, keys, True, start)
    assert chosen == keys
    return key


def publish(replay: int, now: datetime) -> list[str]:
    turn = pacing.take_turn(replay, now)
    assert turn is not None
    return pacing.claim_runs(turn)


def test_route_replay_events_wait_for_their_turn_not_for_the_sweep(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    keys = failed_events(load_json, 30)
    start = utcnow()
    key = route_replay(keys, start)
    assert events.claim_stranded(0, 3600) == []  # the sweep sends none of them
    statuses = {EventStatus(e.status) for e in EventRecord.select()}
    assert statuses == {EventStatus.FAILED}  # untouched until published
    first = publish(key, start + timedelta(seconds=0.2))
    assert first == [str(k) for k in keys[:3]]  # due at 0, 0.1, 0.2 s: in schedule order
    assert {
        EventStatus(e.status) for e in EventRecord.select().where(EventRecord.uuid.in_(keys[:3]))
    } == {EventStatus.ACCEPTED}
    assert publish(key, start + timedelta(seconds=0.25)) == []  # nothing new is due
    assert publish(key, start + timedelta(seconds=0.45)) == [str(k) for k in keys[3:5]]


def test_after_10_s_without_a_publisher_a_replay_goes_on_at_its_rate_not_at_once(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    keys = failed_events(load_json, 200)
    start = utcnow()
    key = route_replay(keys, start)
    assert len(publish(key, start + timedelta(seconds=0.15))) == 2
    later = start + timedelta(seconds=10.15)  # the publisher crashed; a worker looks now
    burst = publish(key, later)
    assert len(burst) <= RATE * pacing.SLACK + 1  # not the 100 that fell due meanwhile
    assert burst == [str(k) for k in keys[2 : 2 + len(burst)]]  # in schedule order
    sent = 0
    for tick in range(1, 51):  # five more seconds of a publisher looking every 0.1 s
        sent += len(publish(key, later + timedelta(seconds=tick / 10)))
    assert abs(sent - 5 * RATE) <= 1  # then exactly the rate


def test_a_subscription_replay_catches_up_at_its_rate_and_the_sweep_leaves_it_alone(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    keys = failed_events(load_json, 100)
    subscription = insert_subscription(
        "alice", {"name": "s", "jsonpath": "$", "target_url": "http://example.com/h"}
    )
    start = utcnow() - timedelta(seconds=30)  # stored 30 s ago, never published since
    asked = NewReplay("subscription", "cli", RATE, subscription=subscription.uuid)
    key = replays.create_delivery_replay(asked, keys, start)
    assert deliveries.claim_overdue(0) == []  # the deliveries' sweep sends none of them
    turn = pacing.take_turn(key)
    assert turn is not None
    assert len(pacing.claim_deliveries(turn)) <= RATE * pacing.SLACK + 1  # the others later


def test_a_replay_is_finished_once_everything_is_published(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    keys = failed_events(load_json, 3)
    start = utcnow()
    key = route_replay(keys, start)
    assert pacing.active() == [key]
    turn = pacing.take_turn(key, start + timedelta(seconds=0.5))
    assert turn is not None
    assert len(pacing.claim_runs(turn)) == 3
    assert pacing.finish_if_done(turn)
    assert pacing.active() == []
    assert pacing.take_turn(key) is None
    progress = replays.progress(key)
    assert progress is not None
    assert (progress.kind, progress.total, progress.pending, progress.delivered) == (
        "route",
        3,
        3,  # published, not run yet
        0,
    )


def test_a_finished_replays_delivery_a_dead_worker_held_is_swept_again(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    keys = failed_events(load_json, 2)
    subscription = insert_subscription(
        "alice", {"name": "s", "jsonpath": "$", "target_url": "http://example.com/h"}
    )
    start = utcnow() - timedelta(seconds=5)
    asked = NewReplay("subscription", "cli", RATE, subscription=subscription.uuid)
    key = replays.create_delivery_replay(asked, keys, start)
    turn = pacing.take_turn(key, start + timedelta(seconds=0.5))
    assert turn is not None
    claimed = pacing.claim_deliveries(turn)
    assert len(claimed) == 2
    assert pacing.finish_if_done(turn)
    held = deliveries.claim(claimed[0], 60, utcnow(), holder="dead-worker")
    assert held is not None  # in flight when its worker died
    workers.release_dead(0)  # the dead worker's delivery loses its lease and its message
    assert deliveries.claim_overdue(3) == [claimed[0]]  # the sweep sends it again
