"""The core flow against a real SQLite file: accept, process, strand, retry, purge."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import peewee
import pytest
from cloudevents.core.v1.event import CloudEvent

from pacifica.dispatcher.errors import NotFoundError, SchemaMismatchError
from pacifica.dispatcher.event_handlers import ExceptionEventHandler
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch, views
from pacifica.dispatcher.storage import (
    EventStatus,
    check_schema,
    code_schema_version,
    deliveries,
    events,
    open_database,
    schema_version,
    sync_schema,
    utcnow,
)
from pacifica.dispatcher.storage.schema import Delivery, DeliveryAttempt, EventRecord, RouteRun
from pacifica.dispatcher.storage.subscriptions import insert_subscription
from pacifica.dispatcher.testing import RecordingEventHandler, event_from_dict
from tests.conftest import LoadJson

INGEST = '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]'


@pytest.fixture
def ingest_event(load_json: LoadJson) -> ReceivedEvent:
    return event_from_dict(load_json("metadata_ingest_event.json"))


@pytest.fixture(params=["update-returning", "update-then-select"])
def claim_statement(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Process with ``UPDATE … RETURNING``, and as on MySQL, which has no RETURNING."""
    if request.param == "update-then-select":
        monkeypatch.setattr(
            "pacifica.dispatcher.storage.events.supports_returning", lambda database: False
        )
    param: str = request.param
    return param


def test_accepted_event_is_stored_with_its_attributes(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent
) -> None:
    [accepted] = dispatch.accept([ingest_event])
    record = dispatch.get_event(accepted.uuid)
    assert accepted.created
    assert record.event_status is EventStatus.ACCEPTED
    assert record.event_id == "metadata.ingest.1"
    assert record.spec_version == "0.1"
    assert record.document == ingest_event.document
    assert record.event_time is not None
    assert record.event_time.tzinfo is not None


def test_duplicate_event_returns_the_original_record(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent
) -> None:
    [first] = dispatch.accept([ingest_event])
    [second] = dispatch.accept([ingest_event])
    assert second.uuid == first.uuid
    assert not second.created
    assert EventRecord.select().count() == 1


def test_process_runs_every_route_and_records_each(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent, claim_statement: str
) -> None:
    ok = RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, ExceptionEventHandler(), name="boom")
    router.add_route(INGEST, ok, name="ok")
    [accepted] = dispatch.accept([ingest_event])
    assert dispatch.process(accepted.uuid, router) is EventStatus.FAILED
    described = views.describe(dispatch.get_event(accepted.uuid))
    assert described["taskStatus"] == "500 Internal Server Error"
    assert described["exceptionType"] == "Exception"
    assert "Traceback" in described["exceptionTraceback"]
    assert [(r["route"], r["status"]) for r in described["routes"]] == [
        ("boom", "FAILED"),
        ("ok", "SUCCEEDED"),
    ]
    assert len(ok.events) == 1


def test_process_counts_attempts_and_refuses_unknown_or_deleted_events(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent, claim_statement: str
) -> None:
    router = Router()
    router.add_route(INGEST, RecordingEventHandler())
    [accepted] = dispatch.accept([ingest_event])
    dispatch.process(accepted.uuid, router)
    dispatch.reset_for_retry([accepted.uuid])
    dispatch.process(accepted.uuid, router)
    assert dispatch.get_event(accepted.uuid).attempts == 2
    EventRecord.update(deleted=utcnow()).execute()
    with pytest.raises(NotFoundError):
        dispatch.process(accepted.uuid, router)
    with pytest.raises(NotFoundError):
        dispatch.process("00000000-0000-0000-0000-000000000000", router)


def test_process_many_takes_new_events_and_reports_final_and_unknown_ones(
    sqlite_db: peewee.Database, load_json: LoadJson, claim_statement: str
) -> None:
    handler = RecordingEventHandler()
    router = Router()
    router.add_route("$", handler, name="all")
    events = [
        event_from_dict({**load_json("sop_example_event.json"), "eventID": f"e{i}"})
        for i in range(3)
    ]
    first, second, third = (a.uuid for a in dispatch.accept(events))
    dispatch.process(first, router)
    unknown = "00000000-0000-0000-0000-000000000000"
    done = dispatch.process_many([first, second, unknown, third, second], router)
    assert done.statuses == dict.fromkeys([first, second, third], EventStatus.SUCCEEDED)
    assert done.missing == [unknown]
    assert [e.get_id() for e in handler.events] == ["e0", "e1", "e2"]
    assert [r.attempts for r in RouteRun.select().order_by(RouteRun.id)] == [1, 1, 1]


def test_a_run_recorded_meanwhile_by_another_delivery_is_updated_not_duplicated(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent, claim_statement: str
) -> None:
    """Two workers on one event: the second to record its run updates the first's."""
    [accepted] = dispatch.accept([ingest_event])

    class RecordedMeanwhile(RecordingEventHandler):
        def handle(self, event: CloudEvent) -> None:
            RouteRun.insert(
                event=accepted.uuid, route="ingest", handler="other worker", status=200, attempts=1
            ).execute()
            super().handle(event)

    router = Router()
    router.add_route(INGEST, RecordedMeanwhile(), name="ingest")
    assert dispatch.process(accepted.uuid, router) is EventStatus.SUCCEEDED
    [run] = RouteRun.select()
    assert run.attempts == 2
    assert run.handler.endswith("RecordedMeanwhile")


def test_an_event_held_by_another_message_is_skipped_until_its_lease_ends(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent, claim_statement: str
) -> None:
    handler = RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, handler, name="ingest")
    [accepted] = dispatch.accept([ingest_event])
    EventRecord.update(status=102, started=utcnow(), claimed_by="message-a").execute()
    copy = dispatch.process_many([accepted.uuid], router, claimant="message-b", lease=3600)
    assert copy.statuses == {accepted.uuid: EventStatus.PROCESSING}
    assert handler.events == []
    redelivered = dispatch.process_many([accepted.uuid], router, claimant="message-a", lease=3600)
    assert redelivered.statuses == {accepted.uuid: EventStatus.SUCCEEDED}
    assert len(handler.events) == 1


def test_an_event_held_past_its_lease_is_taken_over(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent, claim_statement: str
) -> None:
    handler = RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, handler, name="ingest")
    [accepted] = dispatch.accept([ingest_event])
    two_hours_ago = utcnow() - timedelta(hours=2)
    EventRecord.update(status=102, started=two_hours_ago, claimed_by="message-a").execute()
    done = dispatch.process_many([accepted.uuid], router, claimant="sweeper-copy", lease=3600)
    assert done.statuses == {accepted.uuid: EventStatus.SUCCEEDED}
    assert dispatch.get_event(accepted.uuid).claimed_by == "sweeper-copy"


def test_schema_3_adds_the_claimant_to_an_existing_database(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    sync_schema(database)
    database.execute_sql('ALTER TABLE "dispatcher_event" DROP COLUMN "claimed_by"')
    database.execute_sql('UPDATE "dispatcher_schema" SET "version" = 2')
    with pytest.raises(SchemaMismatchError):
        check_schema(database)
    assert sync_schema(database) == [
        "3: which message holds an event in processing",
        "4: worker heartbeats; which worker holds an event or a delivery",
        "5: per-host delivery slots (concurrent deliveries per target host)",
        "7: what a route run reported (a consumer entry point's exit status and output)",
        "8: transaction ids of events; indexes for the operator page and /metrics",
        "9: replays (a delivery belongs to a replay or to none) and lineage",
        "10: drop the event indexes no query uses (faster writes on large tables)",
        "11: route replays' schedule; replays' pacing after a publisher stopped",
    ]
    check_schema(database)
    assert "claimed_by" in {c.name for c in database.get_columns("dispatcher_event")}


def test_schema_4_adds_heartbeats_and_holders_to_an_existing_database(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    sync_schema(database)
    database.execute_sql('DROP INDEX "eventrecord_holder"')
    for table in ("dispatcher_event", "dispatcher_delivery"):
        database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "holder"')
    database.execute_sql('DROP TABLE "dispatcher_worker"')
    database.execute_sql('UPDATE "dispatcher_schema" SET "version" = 3')
    assert sync_schema(database) == [
        "4: worker heartbeats; which worker holds an event or a delivery",
        "5: per-host delivery slots (concurrent deliveries per target host)",
        "7: what a route run reported (a consumer entry point's exit status and output)",
        "8: transaction ids of events; indexes for the operator page and /metrics",
        "9: replays (a delivery belongs to a replay or to none) and lineage",
        "10: drop the event indexes no query uses (faster writes on large tables)",
        "11: route replays' schedule; replays' pacing after a publisher stopped",
    ]
    check_schema(database)
    for table in ("dispatcher_event", "dispatcher_delivery"):
        assert "holder" in {c.name for c in database.get_columns(table)}
    assert database.table_exists("dispatcher_worker")


def test_schema_11_adds_route_replay_schedules_to_a_version_10_database(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    sync_schema(database)
    database.execute_sql('DROP TABLE "dispatcher_replay_run"')
    database.execute_sql('DROP INDEX "replay_released"')
    database.execute_sql('DROP INDEX "delivery_replay_schedule"')
    for column in ("paced", "lag", "released"):
        database.execute_sql(f'ALTER TABLE "dispatcher_replay" DROP COLUMN "{column}"')
    database.execute_sql('UPDATE "dispatcher_schema" SET "version" = 10')
    assert sync_schema(database) == [
        "11: route replays' schedule; replays' pacing after a publisher stopped"
    ]
    check_schema(database)
    assert {"paced", "lag", "released"} <= {
        c.name for c in database.get_columns("dispatcher_replay")
    }
    assert database.table_exists("dispatcher_replay_run")
    indexes = {i.name for i in database.get_indexes("dispatcher_delivery")}
    assert "delivery_replay_schedule" in indexes  # a replay's unsent deliveries, in order


def test_unrouted_event_is_422(sqlite_db: peewee.Database, ingest_event: ReceivedEvent) -> None:
    [accepted] = dispatch.accept([ingest_event])
    assert dispatch.process(accepted.uuid, Router()) is EventStatus.UNROUTED
    described = views.describe(dispatch.get_event(accepted.uuid))
    assert described["taskStatus"] == "422 Unprocessable Entity"
    assert described["exceptionType"] == "RouteNotFoundRouterError"


def test_final_event_is_not_processed_again(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent, claim_statement: str
) -> None:
    handler = RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, handler)
    [accepted] = dispatch.accept([ingest_event])
    dispatch.process(accepted.uuid, router)
    assert dispatch.process(accepted.uuid, router) is EventStatus.SUCCEEDED
    assert len(handler.events) == 1


def test_retry_reruns_failed_routes_but_not_succeeded_ones(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent, claim_statement: str
) -> None:
    flaky = RecordingEventHandler(error=RuntimeError("disk full"))
    steady = RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, flaky, name="flaky")
    router.add_route(INGEST, steady, name="steady")
    [accepted] = dispatch.accept([ingest_event])
    dispatch.process(accepted.uuid, router)
    flaky.error = None
    dispatch.reset_for_retry([accepted.uuid])
    assert dispatch.process(accepted.uuid, router) is EventStatus.SUCCEEDED
    assert (len(flaky.events), len(steady.events)) == (2, 1)
    assert RouteRun.get(RouteRun.route == "flaky").attempts == 2


def test_unsent_and_lost_events_are_stranded_once(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    unsent, lost, fresh, sent = (
        event_from_dict({**load_json("sop_example_event.json"), "eventID": name})
        for name in ("unsent", "lost", "fresh", "sent")
    )
    ids = [a.uuid for a in dispatch.accept([unsent, lost, fresh, sent])]
    events.mark_enqueued(ids[1:])
    two_minutes_ago = utcnow() - timedelta(seconds=120)
    EventRecord.update(created=two_minutes_ago).where(EventRecord.uuid << ids[:2]).execute()
    EventRecord.update(enqueued=two_minutes_ago).where(EventRecord.uuid == ids[1]).execute()
    assert sorted(events.claim_stranded(60, 3600)) == sorted(ids[:2])
    assert events.claim_stranded(60, 3600) == []


def test_batch_with_a_repeated_event_stores_it_once(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent
) -> None:
    first, second = dispatch.accept([ingest_event, ingest_event])
    assert first.created
    assert (second.uuid, second.created) == (first.uuid, False)
    assert EventRecord.select().count() == 1


def test_event_processing_past_its_lease_is_stranded(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent
) -> None:
    [accepted] = dispatch.accept([ingest_event])
    long_ago = utcnow() - timedelta(hours=2)
    EventRecord.update(status=102, started=long_ago, enqueued=long_ago).execute()
    assert events.claim_stranded(60, 3600) == [accepted.uuid]


def test_purge_removes_old_events_and_their_runs(
    sqlite_db: peewee.Database, ingest_event: ReceivedEvent
) -> None:
    router = Router()
    router.add_route(INGEST, RecordingEventHandler())
    [accepted] = dispatch.accept([ingest_event])
    dispatch.process(accepted.uuid, router)
    assert events.purge(utcnow() - timedelta(days=1)) == 0
    seen: list[tuple[int, ...]] = []
    assert events.purge(utcnow() + timedelta(seconds=1), progress=lambda *p: seen.append(p)) == 1
    assert seen == [(1, 1)]
    assert RouteRun.select().count() == 0
    with pytest.raises(NotFoundError):
        dispatch.get_event(accepted.uuid)


def test_purge_goes_chunk_by_chunk_oldest_first_taking_the_deliveries_along(
    sqlite_db: peewee.Database, load_json: LoadJson, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "SWEEP_BATCH", 2)
    received = [
        event_from_dict({**load_json("sop_example_event.json"), "eventID": f"e{i}"})
        for i in range(5)
    ]
    ids = [uuid.UUID(a.uuid) for a in dispatch.accept(received)]
    for age, key in enumerate(reversed(ids)):  # ids[0] is the oldest
        EventRecord.update(created=utcnow() - timedelta(hours=age + 1)).where(
            EventRecord.uuid == key
        ).execute()
    hook = insert_subscription("alice", {"name": "h", "jsonpath": "$", "target_url": "http://h/"})
    for key in ids:
        [delivery] = deliveries.record_matches(key, [str(hook.uuid)])
        DeliveryAttempt.create(delivery=delivery, number=1, kind="target", duration=0.1)
    seen: list[tuple[int, ...]] = []
    assert events.purge(utcnow(), limit=3, progress=lambda *p: seen.append(p)) == 3
    assert seen == [(2, 3), (3, 3)]
    assert {r.uuid for r in EventRecord.select()} == set(ids[3:])
    assert {d.event_id for d in Delivery.select()} == set(ids[3:])  # type: ignore[attr-defined]
    assert DeliveryAttempt.select().count() == 2


def test_unknown_and_malformed_task_ids(sqlite_db: peewee.Database) -> None:
    with pytest.raises(NotFoundError):
        dispatch.get_event("00000000-0000-0000-0000-000000000000")
    with pytest.raises(ValueError, match="badly formed"):
        dispatch.get_event("abc")


def test_schema_check_and_sync(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    assert schema_version(database) == 0
    with pytest.raises(SchemaMismatchError, match="db sync"):
        check_schema(database)
    assert sync_schema(database)
    check_schema(database)
    assert schema_version(database) == code_schema_version()
    assert sync_schema(database) == []


def test_recent_lists_newest_first_and_pages(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    received = [
        event_from_dict({**load_json("sop_example_event.json"), "eventID": f"e{i}"})
        for i in range(5)
    ]
    ids = [a.uuid for a in dispatch.accept(received)]
    for offset, key in enumerate(reversed(ids)):
        EventRecord.update(created=utcnow() - timedelta(seconds=offset)).where(
            EventRecord.uuid == key
        ).execute()
    page = events.recent(limit=2, offset=1)
    assert [str(r.uuid) for r in page] == [ids[3], ids[2]]
