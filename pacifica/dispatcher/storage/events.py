"""Event queries: store, claim, record outcomes, find stranded events, retry, purge, read.

Rows leave this module as typed values (``StoredEvent``, ``RouteRunRow``), never
as peewee models or dicts keyed by column names.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import peewee

from pacifica.dispatcher.storage.database import supports_returning, write_transaction
from pacifica.dispatcher.storage.deliveries import delete_deliveries_of
from pacifica.dispatcher.storage.schema import EventRecord, RouteRun, database_proxy
from pacifica.dispatcher.storage.statements import (
    SWEEP_BATCH,
    chunks,
    claim_unsent,
    columns_of,
    insert_rows,
    placeholders,
    select_in,
    update_in,
    value_of,
)
from pacifica.dispatcher.storage.values import EventStatus, RunStatus, utcnow


class NewEvent(NamedTuple):
    """An event to store: its attributes and the document routes match."""

    uuid: uuidlib.UUID
    event_id: str
    source: str
    event_type: str
    spec_version: str
    event_time: datetime | None
    content_type: str | None
    document: Any
    created: datetime
    transaction_id: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """A stored event and where it is in its life."""

    uuid: uuidlib.UUID
    event_id: str
    source: str
    event_type: str
    spec_version: str
    event_time: datetime | None
    content_type: str | None
    document: Any
    status: EventStatus
    attempts: int
    enqueued: datetime | None
    started: datetime | None
    finished: datetime | None
    created: datetime
    updated: datetime
    deleted: datetime | None
    claimed_by: str | None

    @classmethod
    def from_record(cls, record: EventRecord) -> StoredEvent:
        """The value of a peewee row."""
        return value_of(cls, record, status=EventStatus(record.status))

    @property
    def event_status(self) -> EventStatus:
        """``status`` (the name the upstream-shaped views use)."""
        return self.status


class RouteRunRow(NamedTuple):
    """One route's run for one event, with the handler's exception if it raised."""

    event: uuidlib.UUID
    route: str
    handler: str
    status: RunStatus
    exc_type: str | None
    exc_message: str | None
    exc_traceback: str | None
    attempts: int
    started: datetime
    finished: datetime | None
    updated: datetime
    report: str | None = None  # what the handler reported about a successful run


_NEW_DEFAULTS = {"status": int(EventStatus.ACCEPTED), "attempts": 0}


def insert_events(events: Sequence[NewEvent]) -> None:
    """Store new events (``202 Accepted``, no message sent yet); call inside a transaction."""
    insert_rows(
        EventRecord,
        [{**e._asdict(), **_NEW_DEFAULTS, "updated": e.created} for e in events],
    )


def existing_ids(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Task ids of the events already stored, by (source, id): one indexed lookup per source."""
    by_source: dict[str, set[str]] = {}
    for source, event_id in keys:
        by_source.setdefault(source, set()).add(event_id)
    found: dict[tuple[str, str], str] = {}
    for source, event_ids in by_source.items():
        for chunk in chunks(sorted(event_ids)):
            rows = select_in(
                EventRecord, ["uuid", "event_id"], {"source": source}, "event_id", chunk
            )
            for uuid, event_id in rows:
                found[(source, event_id)] = str(uuid)
    return found


def mark_enqueued(task_ids: Sequence[str]) -> None:
    """Record that the broker took these events' messages."""
    now = utcnow()
    for chunk in chunks([uuidlib.UUID(t) for t in task_ids]):
        update_in(EventRecord, {"enqueued": now, "updated": now}, "uuid", chunk)


def get_event(key: uuidlib.UUID) -> StoredEvent | None:
    """The live (not deleted) event with this task id, or None."""
    record = EventRecord.get_or_none(EventRecord.uuid == key)
    if record is None or record.deleted is not None:
        return None
    return StoredEvent.from_record(record)


def live_events(keys: Sequence[uuidlib.UUID]) -> dict[uuidlib.UUID, StoredEvent]:
    """The live events among ``keys``, by task id (an unreadable one is left out)."""
    query = EventRecord.select(*_COLUMNS).where(
        EventRecord.uuid.in_(list(keys)) & EventRecord.deleted.is_null()
    )
    readable, _ = _read_rows(query)
    return {e.uuid: e for e in readable}


_COLUMNS = tuple(EventRecord._meta.sorted_fields)
_NAMES = [c.name for c in _COLUMNS]  # (peewee's Field == builds SQL: look fields up by name)
_UUID_AT = _NAMES.index("uuid")
# For each field of StoredEvent: where its column is in a row, and how to read it.
_READERS = tuple(
    (_NAMES.index(f.name), EventRecord._meta.fields[f.name].python_value)
    for f in dataclasses.fields(StoredEvent)
)
_STATUS_AT = [f.name for f in dataclasses.fields(StoredEvent)].index("status")


def _read_rows(query: Any) -> tuple[list[StoredEvent], dict[uuidlib.UUID, str]]:
    """Run ``query`` (selecting or returning ``_COLUMNS``) to the end, then convert each row.

    The statement is finished before any row is converted, so a row that
    cannot be read (a document too deep to decode) holds no cursor or lock
    open; it comes back in the second value with the reason, by task id.
    """
    sql, params = query.sql()
    return _read_raw(database_proxy.execute_sql(sql, params).fetchall())


def _read_raw(raw: list[tuple[Any, ...]]) -> tuple[list[StoredEvent], dict[uuidlib.UUID, str]]:
    """Rows of ``_COLUMNS``, fetched to the end, as events (and unreadable ones, as above)."""
    events, unreadable = [], {}
    for row in raw:
        key = uuidlib.UUID(str(row[_UUID_AT]))
        try:
            values = [read(row[at]) for at, read in _READERS]
            values[_STATUS_AT] = EventStatus(values[_STATUS_AT])
            events.append(StoredEvent(*values))
        except Exception as exc:  # whatever a stored row can hold, it must not stop the others
            unreadable[key] = f"{type(exc).__name__}: {exc}"
    return events, unreadable


def claim_events(
    keys: Sequence[uuidlib.UUID], claimant: str | None, lease: float, holder: str | None = None
) -> tuple[list[StoredEvent], dict[uuidlib.UUID, StoredEvent], dict[uuidlib.UUID, str]]:
    """Take events into ``102 Processing`` for ``claimant`` (a broker message); one statement.

    Returns the claimed events in ``keys`` order; the other live events among
    ``keys`` (final, or held by another message for less than ``lease``
    seconds); and claimed events that cannot be read, with the reason. The
    same claimant takes its own events back at once. ``holder`` names the
    worker running them (``workers.release_dead``).
    """
    now = utcnow()
    if supports_returning(database_proxy):
        claimed, unreadable = _read_raw(_claim_returning(keys, claimant, lease, holder, now))
        rows = {e.uuid: e for e in claimed}
        unclaimed = [k for k in keys if k not in rows and k not in unreadable]
        others = live_events(unclaimed) if unclaimed else {}
    else:
        rows, others, unreadable = _claim_then_read(keys, claimant, lease, holder, now)
    return [rows[k] for k in dict.fromkeys(keys) if k in rows], others, unreadable


def _claim_then_read(
    keys: Sequence[uuidlib.UUID],
    claimant: str | None,
    lease: float,
    holder: str | None,
    now: datetime,
) -> tuple[
    dict[uuidlib.UUID, StoredEvent], dict[uuidlib.UUID, StoredEvent], dict[uuidlib.UUID, str]
]:
    """The claim on MySQL (no RETURNING): mark, then read back what this claim marked."""
    held_by_us = (
        EventRecord.claimed_by.is_null() if claimant is None else EventRecord.claimed_by == claimant
    )
    takeable = (EventRecord.status == int(EventStatus.ACCEPTED)) | (
        (EventRecord.status == int(EventStatus.PROCESSING))
        & ((EventRecord.started < now - timedelta(seconds=lease)) | held_by_us)
    )
    EventRecord.update(
        status=int(EventStatus.PROCESSING),
        started=now,
        attempts=EventRecord.attempts + 1,
        updated=now,
        claimed_by=claimant,
        holder=holder,
    ).where(EventRecord.uuid.in_(list(keys)) & EventRecord.deleted.is_null() & takeable).execute()
    query = EventRecord.select(*_COLUMNS).where(
        EventRecord.uuid.in_(list(keys)) & EventRecord.deleted.is_null()
    )
    everything, unreadable = _read_rows(query)
    rows = {
        e.uuid: e
        for e in everything
        if e.status is EventStatus.PROCESSING and e.claimed_by == claimant
    }
    others = {e.uuid: e for e in everything if e.uuid not in rows}
    return rows, others, unreadable


def _claim_returning(
    keys: Sequence[uuidlib.UUID],
    claimant: str | None,
    lease: float,
    holder: str | None,
    now: datetime,
) -> list[tuple[Any, ...]]:
    """The claim as one hand-built ``UPDATE … RETURNING`` (building it with peewee cost more
    CPU than running it); the claimed rows, as ``_COLUMNS``."""
    table, c = columns_of(EventRecord)
    mark = placeholders(EventRecord, 1)
    held_by_us = f"{c['claimed_by']} IS NULL" if claimant is None else f"{c['claimed_by']} = {mark}"
    sql = (
        f"UPDATE {table} SET {c['status']} = {mark}, {c['started']} = {mark}, "  # noqa: S608
        f"{c['attempts']} = {c['attempts']} + 1, {c['updated']} = {mark}, "
        f"{c['claimed_by']} = {mark}, {c['holder']} = {mark} "
        f"WHERE {c['uuid']} IN ({placeholders(EventRecord, len(keys))}) "
        f"AND {c['deleted']} IS NULL AND ({c['status']} = {mark} OR ({c['status']} = {mark} "
        f"AND ({c['started']} < {mark} OR {held_by_us}))) "
        f"RETURNING {', '.join(c[name] for name in _NAMES)}"
    )
    fields = EventRecord._meta.fields
    at = fields["started"].db_value(now)
    params: list[Any] = [int(EventStatus.PROCESSING), at, fields["updated"].db_value(now)]
    params += [claimant, holder, *(fields["uuid"].db_value(k) for k in keys)]
    params += [int(EventStatus.ACCEPTED), int(EventStatus.PROCESSING)]
    params.append(fields["started"].db_value(now - timedelta(seconds=lease)))
    if claimant is not None:
        params.append(claimant)
    return list(database_proxy.execute_sql(sql, params).fetchall())


def previous_runs(keys: Sequence[uuidlib.UUID]) -> dict[uuidlib.UUID, dict[str, RunStatus]]:
    """Route statuses of earlier attempts, by event and route."""
    found: dict[uuidlib.UUID, dict[str, RunStatus]] = {}
    if keys:
        query = RouteRun.select(RouteRun.event, RouteRun.route, RouteRun.status)
        rows = cast(
            Iterable[tuple[Any, str, int]], query.where(RouteRun.event.in_(list(keys))).tuples()
        )
        for event, route, status in rows:
            found.setdefault(event, {})[route] = RunStatus(status)
    return found


def record_outcomes(
    first_attempts: set[uuidlib.UUID],
    runs: Sequence[RouteRunRow],
    finished: dict[EventStatus, list[uuidlib.UUID]],
    handed_back: Sequence[uuidlib.UUID],
) -> None:
    """Record route runs and final statuses, and release handed-back events, in one transaction.

    Runs of events on their first attempt are inserted with one prepared
    statement; runs of retried events take the place of the earlier ones.
    """
    now = utcnow()
    first = [run._asdict() for run in runs if run.event in first_attempts]
    again = [run._asdict() for run in runs if run.event not in first_attempts]
    with write_transaction():
        try:
            with write_transaction():  # a savepoint: on PostgreSQL a conflict aborts the rest
                insert_rows(RouteRun, first)
        except peewee.IntegrityError:  # another delivery of an event recorded a run first
            again = [run._asdict() for run in runs]
        for chunk in chunks(again, 100):
            _upsert_route_runs(chunk)
        for status, keys in finished.items():
            changes = {"status": int(status), "finished": now, "updated": now}
            for some in chunks(keys):
                update_in(EventRecord, changes, "uuid", some)
        if handed_back:
            EventRecord.update(
                status=int(EventStatus.ACCEPTED),
                attempts=EventRecord.attempts - 1,
                enqueued=now,
                updated=now,
                claimed_by=None,
            ).where(EventRecord.uuid.in_(list(handed_back))).execute()


def _upsert_route_runs(rows: Sequence[dict[str, Any]]) -> None:
    """Insert route runs; a run already recorded for (event, route) takes the new result.

    On conflict the row keeps its id and creation time and counts one more attempt.
    """
    if not rows:
        return
    fields = [
        "handler",
        "status",
        "exc_type",
        "exc_message",
        "exc_traceback",
        "report",
        "started",
        "finished",
        "updated",
    ]
    update: dict[Any, Any] = {getattr(RouteRun, f): getattr(peewee.EXCLUDED, f) for f in fields}
    update[RouteRun.attempts] = RouteRun.attempts + 1
    target = (
        None
        if isinstance(database_proxy.obj, peewee.MySQLDatabase)
        else [RouteRun.event, RouteRun.route]
    )
    RouteRun.insert_many(rows).on_conflict(conflict_target=target, update=update).execute()


def claim_stranded(
    requeue_after: float, processing_lease: float, limit: int = SWEEP_BATCH
) -> list[str]:
    """Claim events to send again (the events' side of the outbox sweep).

    That is: events still ``202 Accepted`` ``requeue_after`` seconds after they
    arrived with no message sent, or after their message was sent; and events
    ``102 Processing`` for longer than ``processing_lease`` (their worker died).
    """
    now = utcnow()
    accepted, processing = int(EventStatus.ACCEPTED), int(EventStatus.PROCESSING)
    waited = now - timedelta(seconds=requeue_after)
    stale = now - timedelta(seconds=processing_lease)
    query = (
        EventRecord.select(EventRecord.uuid, EventRecord.enqueued)
        .where(
            EventRecord.deleted.is_null()
            & (
                (
                    (EventRecord.status == accepted)
                    & EventRecord.enqueued.is_null()
                    & (EventRecord.created < waited)
                )
                | ((EventRecord.status == accepted) & (EventRecord.enqueued < waited))
                | (
                    (EventRecord.status == processing)
                    & (EventRecord.started < stale)
                    & (EventRecord.enqueued < stale)
                )
            )
        )
        .order_by(EventRecord.created)
        .limit(limit)
    )
    candidates = [(r.uuid, r.enqueued) for r in query]
    return [str(k) for k in claim_unsent(EventRecord, "uuid", candidates, now)]


def reset_for_retry(keys: Sequence[uuidlib.UUID]) -> None:
    """Put events back to ``202 Accepted`` (no message sent) so they run again."""
    with write_transaction():
        EventRecord.update(
            status=int(EventStatus.ACCEPTED), enqueued=None, finished=None, updated=utcnow()
        ).where(EventRecord.uuid.in_(list(keys))).execute()


def delete_events(keys: Sequence[uuidlib.UUID]) -> int:
    """Delete events with their route runs, deliveries and the deliveries' logged requests,
    a chunk a transaction; return how many events went."""
    deleted = 0
    for chunk in chunks(keys):
        with write_transaction():
            RouteRun.delete().where(RouteRun.event.in_(chunk)).execute()
            delete_deliveries_of(chunk)
            deleted += EventRecord.delete().where(EventRecord.uuid.in_(chunk)).execute()
    return int(deleted)


def purge(
    older_than: datetime,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    final_only: bool = False,
) -> int:
    """Delete events created before ``older_than``, oldest first, with everything recorded
    about them (``delete_events``); return how many.

    One chunk at a time: each chunk's ids are read from the ``created`` index
    where the last one ended, then deleted in their own transaction, so memory
    holds one chunk and the receiver and workers wait for one chunk's commit at
    most, however many events go. ``final_only`` keeps events still waiting or
    running. ``progress(done, total)`` is called after each chunk (counting the
    total costs one index scan, so only then).
    """
    query = EventRecord.select(EventRecord.uuid, EventRecord.created).where(
        EventRecord.created < older_than
    )
    if final_only:
        query = query.where(EventRecord.status.in_([int(s) for s in EventStatus if s.final]))
    total = 0
    if progress is not None:
        total = query.count() if limit is None else min(limit, query.limit(limit).count())
    deleted, start = 0, None
    while limit is None or deleted < limit:
        size = SWEEP_BATCH if limit is None else min(SWEEP_BATCH, limit - deleted)
        page = query if start is None else query.where(EventRecord.created >= start)
        rows = cast(
            list[tuple[Any, datetime]],
            list(page.order_by(EventRecord.created).limit(size).tuples()),
        )
        if not rows:
            break
        deleted += delete_events([key for key, _ in rows])
        start = rows[-1][1]
        if progress is not None:
            progress(deleted, max(total, deleted))
    return deleted


def recent(
    limit: int = 100,
    offset: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, uuidlib.UUID] | None = None,
) -> list[StoredEvent]:
    """The most recent live events, newest first; ``after`` (created, task id): only those
    listed after that row (a page's cursor: an index range, not an ``offset`` scan)."""
    query = EventRecord.select().where(EventRecord.deleted.is_null())
    if since is not None:
        query = query.where(EventRecord.created >= since)
    if until is not None:
        query = query.where(EventRecord.created < until)
    if after is not None:
        created, key = after
        # created <= c first: the range the created index serves; the OR breaks the ties.
        query = query.where(
            (EventRecord.created <= created)
            & ((EventRecord.created < created) | (EventRecord.uuid < key))
        )
    ordered = query.order_by(EventRecord.created.desc(), EventRecord.uuid.desc())
    return [StoredEvent.from_record(r) for r in ordered.limit(limit).offset(offset)]


def route_runs(key: uuidlib.UUID) -> list[RouteRunRow]:
    """Every route run of an event, in the order they were first recorded."""
    query = RouteRun.select().where(RouteRun.event == key).order_by(RouteRun.id)
    return [
        RouteRunRow(
            key,
            r.route,
            r.handler,
            RunStatus(r.status),
            r.exc_type,
            r.exc_message,
            r.exc_traceback,
            r.attempts,
            r.started,
            r.finished,
            r.updated,
            r.report,
        )
        for r in query
    ]
