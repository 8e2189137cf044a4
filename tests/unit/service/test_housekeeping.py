"""Worker heartbeats: a dead worker's events come back in seconds; a live worker keeps its own."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import peewee

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.housekeeping import Housekeeper
from pacifica.dispatcher.service.outbox import delivery_outbox, event_outbox
from pacifica.dispatcher.storage import EventStatus, replays, utcnow, workers
from pacifica.dispatcher.storage.replays import NewReplay
from pacifica.dispatcher.storage.schema import EventRecord, WorkerBeat
from pacifica.dispatcher.testing import RecordingEventHandler, event_from_dict


def received(event_id: str) -> ReceivedEvent:
    return event_from_dict({"specversion": "1.0", "id": event_id, "type": "t", "source": "s"})


def held_by(holder: str, event_id: str, started_ago: float) -> str:
    """An event claimed by a message of ``holder``, which started ``started_ago`` seconds ago."""
    [accepted] = dispatch.accept([received(event_id)])
    EventRecord.update(
        status=int(EventStatus.PROCESSING),
        claimed_by=f"message-of-{holder}",
        holder=holder,
        started=utcnow() - timedelta(seconds=started_ago),
    ).where(EventRecord.uuid == accepted.uuid).execute()
    return accepted.uuid


def housekeeper(
    settings: Settings, database: peewee.Database, published: list[str] | None = None
) -> Housekeeper:
    """A worker's housekeeper ("me") whose event messages go to ``published`` (if given)."""

    def publish(ids: list[str], delay: float) -> list[str]:
        if published is not None:
            published.extend(ids)
        return ids

    return Housekeeper(
        "me",
        settings,
        event_outbox(publish, settings.processing_lease),
        delivery_outbox(lambda ids, delay: ids),
        lambda: database,
    )


def test_a_silent_workers_events_are_released_and_a_live_workers_are_kept(
    sqlite_db: peewee.Database,
) -> None:
    workers.beat("dead-worker")
    workers.beat("live-worker")
    WorkerBeat.update(heartbeat=utcnow() - timedelta(seconds=60)).where(
        WorkerBeat.name == "dead-worker"
    ).execute()
    lost = held_by("dead-worker", "lost", started_ago=50)
    long_running = held_by("live-worker", "long", started_ago=7200)  # a handler running for hours
    never_beat = held_by("crashed-before-its-first-beat", "early", started_ago=50)
    just_claimed = held_by("crashed-just-now", "fresh", started_ago=1)

    released = workers.release_dead(30)

    assert sorted(released) == sorted([lost, never_beat])
    assert dispatch.get_event(lost).status is EventStatus.ACCEPTED
    assert dispatch.get_event(lost).claimed_by is None
    assert dispatch.get_event(long_running).status is EventStatus.PROCESSING
    assert dispatch.get_event(just_claimed).status is EventStatus.PROCESSING
    assert [w.name for w in WorkerBeat.select()] == ["live-worker"]


def test_the_housekeeper_beats_and_sends_what_it_took_back(
    sqlite_db: peewee.Database, tmp_path: Path
) -> None:
    sent: list[str] = []
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), "WORKER_DEAD_AFTER": "30"})
    keeper = housekeeper(settings, sqlite_db, sent)
    workers.beat("gone")
    WorkerBeat.update(heartbeat=utcnow() - timedelta(seconds=90)).execute()
    lost = held_by("gone", "lost", started_ago=60)

    keeper.tick(now=0.0)

    assert WorkerBeat.get_by_id("me").heartbeat > utcnow() - timedelta(seconds=5)
    assert sent == [lost]
    assert dispatch.get_event(lost).enqueued is not None  # recorded as sent
    handler = RecordingEventHandler()
    router = Router()
    router.add_route("$", handler, name="all")
    assert dispatch.process(lost, router) is EventStatus.SUCCEEDED
    assert len(handler.events) == 1


def test_retention_purges_only_final_events(sqlite_db: peewee.Database, tmp_path: Path) -> None:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), "RETENTION_DAYS": "1"})
    keeper = housekeeper(settings, sqlite_db)
    done, waiting = (a.uuid for a in dispatch.accept([received("done"), received("waiting")]))
    dispatch.process(done, Router())  # 422: final
    EventRecord.update(created=utcnow() - timedelta(days=2)).execute()

    assert keeper.purge(1) == 1
    assert [str(r.uuid) for r in EventRecord.select()] == [waiting]


def test_a_worker_publishes_a_going_replays_messages_as_they_fall_due(
    sqlite_db: peewee.Database, tmp_path: Path
) -> None:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    published: list[str] = []
    keeper = housekeeper(settings, sqlite_db, published)
    router = Router()
    router.add_route("$", RecordingEventHandler(error=RuntimeError("no")), name="flaky")
    keys = [a.uuid for a in dispatch.accept([received("r0"), received("r1")])]
    dispatch.process_many(keys, router)
    started = utcnow() - timedelta(seconds=0.5)  # the second falls due in 9.5 s
    asked = NewReplay("route", "cli", 0.1, route="flaky")
    replays.create_route_replay(asked, [uuid.UUID(k) for k in keys], True, started)

    keeper.tick(now=0.0)  # the heartbeat sees a replay going
    keeper.pace()
    assert published == [keys[0]]
    assert keeper._replaying  # the second is not due yet: it keeps looking every TICK


def test_the_housekeeper_copies_sqlites_log_into_the_database_file(
    sqlite_db: peewee.Database, tmp_path: Path
) -> None:
    """Checkpoints happen on its tick, not in the commit of whichever event fills the log."""
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    keeper = housekeeper(settings, sqlite_db)
    sqlite_db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # the schema, into the file
    [accepted] = dispatch.accept([received("logged")])

    def in_database_file() -> int:  # the file alone, as it would be without its log
        uri = f"file:{tmp_path / 'test.sqlite3'}?immutable=1"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as file_only:
            query = "SELECT count(*) FROM dispatcher_event WHERE event_id = 'logged'"
            return int(file_only.execute(query).fetchone()[0])

    assert in_database_file() == 0  # committed, but only in the write-ahead log so far
    keeper.tick(now=0.0)
    assert in_database_file() == 1
    assert dispatch.get_event(accepted.uuid).status is EventStatus.ACCEPTED
