"""The core: accept events into the database, and process one stored event through a router.

The database is the source of truth. ``accept`` commits events before the
receiver answers; ``process`` runs every matching route of a stored event and
records each route's outcome, skipping routes that already succeeded (so a
redelivered event does not repeat finished work); ``stranded`` finds events
whose broker message was never sent or was lost, so they can be enqueued again.
"""

from __future__ import annotations

import json
import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import peewee

from pacifica.dispatcher.errors import NotFoundError
from pacifica.dispatcher.events import ReceivedEvent, parse_document
from pacifica.dispatcher.router import Route, Router, run_route
from pacifica.dispatcher.storage import (
    EventRecord,
    EventStatus,
    RouteRun,
    RunStatus,
    insert_rows,
    select_in,
    supports_returning,
    update_in,
    upsert_route_runs,
    utcnow,
    write_transaction,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acceptance:
    """The stored record for a received event; ``created`` is False for a duplicate."""

    uuid: str
    created: bool


def accept(events: Sequence[ReceivedEvent]) -> list[Acceptance]:
    """Store events in one transaction and return their task ids (see ``accept_many``)."""
    return accept_many([events])[0]


def accept_many(groups: Sequence[Sequence[ReceivedEvent]]) -> list[list[Acceptance]]:
    """Store several requests' events in one transaction; one list of acceptances per request.

    An event whose (source, id) is already stored, or appears earlier in the
    same call, is not stored again: the original task id comes back with
    ``created=False``. New events have no ``enqueued`` time until their
    message is published (``mark_enqueued``).

    Raises:
        peewee.IntegrityError: another process stored one of these events at
            the same moment; calling again resolves it as a duplicate.
    """
    now = utcnow()
    with write_transaction():
        known = _existing_ids([e for group in groups for e in group])
        rows: list[dict[str, Any]] = []
        results = [[_accept_row(e, known, rows, now) for e in group] for group in groups]
        insert_rows(EventRecord, rows)
    return results


def _existing_ids(events: Sequence[ReceivedEvent]) -> dict[tuple[str, str], str]:
    """Task ids of the events already stored, by (source, id): one indexed lookup per source."""
    by_source: dict[str, set[str]] = {}
    for event in events:
        by_source.setdefault(event.source, set()).add(event.id)
    found: dict[tuple[str, str], str] = {}
    for source, event_ids in by_source.items():
        ids = sorted(event_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = select_in(
                EventRecord, ["uuid", "event_id"], {"source": source}, "event_id", chunk
            )
            for uuid, event_id in rows:
                found[(source, event_id)] = str(uuid)
    return found


def _accept_row(
    received: ReceivedEvent,
    known: dict[tuple[str, str], str],
    rows: list[dict[str, Any]],
    now: datetime,
) -> Acceptance:
    key = (received.source, received.id)
    if key in known:
        return Acceptance(known[key], created=False)
    uuid = uuidlib.uuid4()
    known[key] = str(uuid)
    rows.append(
        {
            "uuid": uuid,
            "event_id": received.id,
            "source": received.source,
            "event_type": received.type,
            "spec_version": received.specversion,
            "event_time": received.time,
            "content_type": received.event.get_datacontenttype(),
            "document": received.document,
            "status": int(EventStatus.ACCEPTED),
            "attempts": 0,
            "created": now,
            "updated": now,
        }
    )
    return Acceptance(str(uuid), created=True)


def mark_enqueued(uuids: Iterable[str]) -> None:
    """Record that the broker took these events' messages."""
    ids = [uuidlib.UUID(u) for u in uuids]
    now = utcnow()
    for start in range(0, len(ids), 500):
        update_in(EventRecord, {"enqueued": now, "updated": now}, "uuid", ids[start : start + 500])


def get_record(task_id: str) -> EventRecord:
    """The stored event with this task id.

    Raises:
        ValueError: the id is not a UUID.
        NotFoundError: no event has this id.
    """
    key = uuidlib.UUID(str(task_id))
    record = EventRecord.get_or_none(EventRecord.uuid == key)
    if record is None or record.deleted is not None:
        raise NotFoundError(f"no task with id {task_id}")
    return record


def process(task_id: str, router: Router) -> EventStatus:
    """Run every matching route of one stored event and record the outcome (see ``process_many``).

    Raises:
        NotFoundError: no event has this id.
        ValueError: the id is not a UUID.
    """
    done = process_many([task_id], router)
    if done.missing:
        raise NotFoundError(f"no task with id {task_id}")
    return done.statuses[str(uuidlib.UUID(str(task_id)))]


@dataclass
class Processed:
    """What ``process_many`` did with the events it was given, by task id."""

    statuses: dict[str, EventStatus] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    handed_back: list[str] = field(default_factory=list)


def process_many(
    task_ids: Sequence[str],
    router: Router,
    time_limit: float | None = None,
    claimant: str | None = None,
    lease: float = 0.0,
) -> Processed:
    """Run every matching route of each stored event, in order, and record the outcomes.

    Three transactions however many events: one statement claims and reads
    them all (``102 Processing``), the routes run, and one transaction records
    every route's run and final status. An event already final (200/422/500)
    is left alone, so a duplicate message is a no-op; a route that succeeded
    on an earlier attempt is not run again.

    ``claimant`` names the broker message. An event another message holds in
    ``102 Processing`` for less than ``lease`` seconds is skipped (reported as
    processing), so two copies of a message never run its handlers at once;
    the same message redelivered after a crash takes its events back. Once
    ``time_limit`` seconds have passed, the events not yet started go back to
    ``202 Accepted`` and are listed in ``handed_back`` for the caller to send on.

    Raises:
        ValueError: an id is not a UUID.
    """
    started = time.monotonic()
    keys = [uuidlib.UUID(str(t)) for t in task_ids]
    done = Processed()
    claimed = _start_processing(keys, done, claimant, lease)
    previous = _previous_runs([r.uuid for r in claimed if r.attempts > 1])
    runs: list[dict[str, Any]] = []
    finished: dict[EventStatus, list[uuidlib.UUID]] = {}
    for position, record in enumerate(claimed):
        if position and time_limit is not None and time.monotonic() - started > time_limit:
            done.handed_back = [str(r.uuid) for r in claimed[position:]]
            break
        status = _run_routes(record, router, previous.get(record.uuid, {}), runs)
        finished.setdefault(status, []).append(record.uuid)
        done.statuses[str(record.uuid)] = status
    first_attempts = {r.uuid for r in claimed if r.attempts == 1}
    _record(first_attempts, runs, finished, [uuidlib.UUID(t) for t in done.handed_back])
    return done


def _start_processing(
    keys: list[uuidlib.UUID], done: Processed, claimant: str | None, lease: float
) -> list[EventRecord]:
    """Claim the events this message may process (``102 Processing``), in ``keys`` order.

    The statuses of final events and of events another message holds, and
    unknown ids, go into ``done``.
    """
    now = utcnow()
    held_by_us = (
        EventRecord.claimed_by.is_null() if claimant is None else EventRecord.claimed_by == claimant
    )
    takeable = (EventRecord.status == int(EventStatus.ACCEPTED)) | (
        (EventRecord.status == int(EventStatus.PROCESSING))
        & ((EventRecord.started < now - timedelta(seconds=lease)) | held_by_us)
    )
    claim = EventRecord.update(
        status=int(EventStatus.PROCESSING),
        started=now,
        attempts=EventRecord.attempts + 1,
        updated=now,
        claimed_by=claimant,
    ).where(EventRecord.uuid.in_(keys) & EventRecord.deleted.is_null() & takeable)
    if supports_returning(EventRecord._meta.database):
        rows = {r.uuid: r for r in claim.returning(EventRecord).execute()}
        unclaimed = [k for k in keys if k not in rows]
        others = _live_records(unclaimed) if unclaimed else {}
    else:  # MySQL: no RETURNING; read back what this claim marked
        claim.execute()
        everything = _live_records(keys)
        rows = {
            k: r
            for k, r in everything.items()
            if r.event_status is EventStatus.PROCESSING and r.claimed_by == claimant
        }
        others = {k: r for k, r in everything.items() if k not in rows}
    for key in keys:
        if key in rows:
            continue
        record = others.get(key)
        if record is None:
            done.missing.append(str(key))
            continue
        done.statuses[str(key)] = record.event_status
        if record.event_status is EventStatus.PROCESSING:
            log.info("event %s is being processed by message %s; skipped", key, record.claimed_by)
    return [rows[k] for k in dict.fromkeys(keys) if k in rows]


def _live_records(keys: list[uuidlib.UUID]) -> dict[uuidlib.UUID, EventRecord]:
    query = EventRecord.select().where(EventRecord.uuid.in_(keys) & EventRecord.deleted.is_null())
    return {r.uuid: r for r in query}


def _previous_runs(keys: list[uuidlib.UUID]) -> dict[uuidlib.UUID, dict[str, int]]:
    """Route statuses of earlier attempts, by event and route (only events tried before have any)."""
    found: dict[uuidlib.UUID, dict[str, int]] = {}
    if keys:
        query = RouteRun.select(RouteRun.event, RouteRun.route, RouteRun.status)
        rows = cast(Iterable[tuple[Any, str, int]], query.where(RouteRun.event.in_(keys)).tuples())
        for event, route, status in rows:
            found.setdefault(event, {})[route] = status
    return found


def _run_routes(
    record: EventRecord,
    router: Router,
    previous: dict[str, int],
    runs: list[dict[str, Any]],
) -> EventStatus:
    """Run an event's matching routes (skipping ones that already succeeded); its final status."""
    received = parse_document(record.document)
    routes = list(router.match(received.document))
    failed = 0
    for route in routes:
        if previous.get(route.name) == RunStatus.SUCCEEDED:
            continue
        run = _run(record, route, received)
        failed += run["status"] == RunStatus.FAILED
        runs.append(run)
    if not routes:
        return EventStatus.UNROUTED
    return EventStatus.FAILED if failed else EventStatus.SUCCEEDED


def _run(record: EventRecord, route: Route, received: ReceivedEvent) -> dict[str, Any]:
    """Run one route for an event; its ``RouteRun`` row, not yet recorded."""
    started = utcnow()
    outcome = run_route(route, received)
    error = outcome.error
    if error is not None:
        log.warning("route %s failed for event %s: %r", route.name, record.uuid, error)
    handler = type(route.event_handler)
    return {
        "event": record.uuid,
        "route": route.name,
        "handler": f"{handler.__module__}.{handler.__qualname__}",
        "status": int(RunStatus.SUCCEEDED if error is None else RunStatus.FAILED),
        "exc_type": None if error is None else type(error).__name__,
        "exc_message": None if error is None else str(error),
        "exc_traceback": outcome.traceback or None,
        "attempts": 1,
        "started": started,
        "finished": utcnow(),
        "updated": utcnow(),
    }


def _record(
    first_attempts: set[uuidlib.UUID],
    runs: list[dict[str, Any]],
    finished: dict[EventStatus, list[uuidlib.UUID]],
    handed_back: list[uuidlib.UUID],
) -> None:
    """Record route runs and final statuses, and release handed-back events, in one transaction.

    Runs of events on their first attempt are inserted with one prepared
    statement; runs of retried events take the place of the earlier ones.
    """
    now = utcnow()
    first = [run for run in runs if run["event"] in first_attempts]
    again = [run for run in runs if run["event"] not in first_attempts]
    with write_transaction():
        try:
            with write_transaction():  # a savepoint: on PostgreSQL a conflict aborts the rest
                insert_rows(RouteRun, first)
        except peewee.IntegrityError:  # another delivery of an event recorded a run first
            again = runs
        for start in range(0, len(again), 100):
            upsert_route_runs(again[start : start + 100])
        for status, keys in finished.items():
            EventRecord.update(status=int(status), finished=now, updated=now).where(
                EventRecord.uuid.in_(keys)
            ).execute()
        if handed_back:
            EventRecord.update(
                status=int(EventStatus.ACCEPTED),
                attempts=EventRecord.attempts - 1,
                enqueued=now,
                updated=now,
                claimed_by=None,
            ).where(EventRecord.uuid.in_(handed_back)).execute()


def stranded(requeue_after: float, processing_lease: float, limit: int = 500) -> list[str]:
    """Claim and return events to enqueue again.

    That is: events still ``202 Accepted`` ``requeue_after`` seconds after they
    arrived with no message sent, or after their message was sent; and events
    ``102 Processing`` for longer than ``processing_lease`` (their worker died).
    Claiming bumps ``enqueued`` conditionally, so two sweepers never both take one.
    """
    now = utcnow()
    accepted = EventStatus.ACCEPTED.value
    query = (
        EventRecord.select(EventRecord.uuid, EventRecord.enqueued)
        .where(
            EventRecord.deleted.is_null()
            & (
                (
                    (EventRecord.status == accepted)
                    & EventRecord.enqueued.is_null()
                    & (EventRecord.created < now - timedelta(seconds=requeue_after))
                )
                | (
                    (EventRecord.status == accepted)
                    & (EventRecord.enqueued < now - timedelta(seconds=requeue_after))
                )
                | (
                    (EventRecord.status == EventStatus.PROCESSING.value)
                    & (EventRecord.started < now - timedelta(seconds=processing_lease))
                    & (EventRecord.enqueued < now - timedelta(seconds=processing_lease))
                )
            )
        )
        .order_by(EventRecord.created)
        .limit(limit)
    )
    return [str(row.uuid) for row in query if _claim(row.uuid, row.enqueued, now)]


def _claim(key: uuidlib.UUID, seen: datetime | None, now: datetime) -> bool:
    condition = EventRecord.enqueued.is_null() if seen is None else EventRecord.enqueued == seen
    claimed: int = (
        EventRecord.update(enqueued=now, updated=now)
        .where((EventRecord.uuid == key) & condition)
        .execute()
    )
    return claimed == 1


def reset_for_retry(task_ids: Iterable[str]) -> list[str]:
    """Put events back to ``202 Accepted`` so they run again; routes that succeeded stay done.

    Raises:
        NotFoundError: an id does not exist.
        ValueError: an id is not a UUID.
    """
    records = [get_record(t) for t in task_ids]
    with write_transaction():
        for record in records:
            EventRecord.update(
                status=int(EventStatus.ACCEPTED), enqueued=None, finished=None, updated=utcnow()
            ).where(EventRecord.uuid == record.uuid).execute()
    return [str(r.uuid) for r in records]


def purge(
    older_than: datetime,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Delete events created before ``older_than`` (and their route runs); return how many.

    ``progress(done, total)`` is called after each chunk of 500.
    """
    query = EventRecord.select(EventRecord.uuid).where(EventRecord.created < older_than)
    if limit is not None:
        query = query.order_by(EventRecord.created).limit(limit)
    ids = [row.uuid for row in query]
    deleted = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        with write_transaction():
            RouteRun.delete().where(RouteRun.event.in_(chunk)).execute()
            deleted += EventRecord.delete().where(EventRecord.uuid.in_(chunk)).execute()
        if progress is not None:
            progress(start + len(chunk), len(ids))
    return int(deleted)


def recent(
    limit: int = 100,
    offset: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[EventRecord]:
    """The most recent events, newest first."""
    query = EventRecord.select().where(EventRecord.deleted.is_null())
    if since is not None:
        query = query.where(EventRecord.created >= since)
    if until is not None:
        query = query.where(EventRecord.created < until)
    return list(
        query.order_by(EventRecord.created.desc(), EventRecord.uuid.desc())
        .limit(limit)
        .offset(offset)
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def summarize(record: EventRecord) -> dict[str, Any]:
    """The short form of an event in listings: ``{taskID, taskStatus, created, updated, deleted}``."""
    return {
        "taskID": str(record.uuid),
        "taskStatus": record.event_status.http,
        "eventType": record.event_type,
        "created": _iso(record.created),
        "updated": _iso(record.updated),
        "deleted": _iso(record.deleted),
    }


def describe(record: EventRecord) -> dict[str, Any]:
    """The upstream ``GET /get/<task_id>`` object, plus every route's result."""
    runs = list(RouteRun.select().where(RouteRun.event == record.uuid).order_by(RouteRun.id))
    failed = next((r for r in runs if r.status == RunStatus.FAILED), None)
    exception = (failed.exc_type, failed.exc_message, failed.exc_traceback) if failed else None
    if record.event_status is EventStatus.UNROUTED:
        exception = ("RouteNotFoundRouterError", "route not found", None)
    document = record.document
    return {
        "eventType": record.event_type,
        "eventTypeVersion": document.get("eventTypeVersion"),
        "source": record.source,
        "eventID": record.event_id,
        "eventTime": _iso(record.event_time),
        "schemaURL": document.get("schemaURL", document.get("dataschema")),
        "contentType": record.content_type,
        "specVersion": record.spec_version,
        "eventData": json.dumps(document, ensure_ascii=False),
        "data": json.dumps(document.get("data"), ensure_ascii=False),
        "taskID": str(record.uuid),
        "taskStatus": record.event_status.http,
        "taskApplicationName": "pacifica.dispatcher",
        "taskName": "pacifica.dispatcher.process",
        "exceptionType": exception[0] if exception else None,
        "exceptionValue": exception[1] if exception else None,
        "exceptionTraceback": exception[2] if exception else None,
        "attempts": record.attempts,
        "created": _iso(record.created),
        "updated": _iso(record.updated),
        "deleted": _iso(record.deleted),
        "routes": [_describe_run(r) for r in runs],
    }


def _describe_run(run: RouteRun) -> dict[str, Any]:
    return {
        "route": run.route,
        "handler": run.handler,
        "status": RunStatus(run.status).name,
        "attempts": run.attempts,
        "exceptionType": run.exc_type,
        "exceptionValue": run.exc_message,
        "exceptionTraceback": run.exc_traceback,
        "started": _iso(run.started),
        "finished": _iso(run.finished),
    }
