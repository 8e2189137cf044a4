"""Operator queries: the aggregates of the operator page and the gauges of ``/metrics``.

Each query is bounded by an index of migration 8 or by a time window
(``since``), so the page and a scrape stay fast on a database of millions of
events (BENCHMARKS.md). Rows leave as typed values.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple, cast

import peewee

from pacifica.dispatcher.storage.database import write_transaction
from pacifica.dispatcher.storage.deliveries import DeliveryRow, deliveries_of, make_pending
from pacifica.dispatcher.storage.events import RouteRunRow, StoredEvent, route_runs
from pacifica.dispatcher.storage.migrations import code_schema_version, schema_version
from pacifica.dispatcher.storage.schema import (
    Delivery,
    EventRecord,
    RouteRun,
    ServerSecret,
    Subscription,
    database_proxy,
)
from pacifica.dispatcher.storage.statements import chunks
from pacifica.dispatcher.storage.subscriptions import bump_revision
from pacifica.dispatcher.storage.values import DeliveryStatus, EventStatus, RunStatus, utcnow


class FlowBucket(NamedTuple):
    """How many events received in one minute now have one status."""

    minute: datetime
    status: EventStatus
    events: int


class QueueState(NamedTuple):
    """Events waiting (202) and processing (102) now, and when the oldest waiting one arrived."""

    waiting: int
    processing: int
    oldest_waiting: datetime | None

    def oldest_age(self, now: datetime) -> float:
        """Seconds the oldest waiting event has waited (0 when none waits)."""
        return 0.0 if self.oldest_waiting is None else (now - self.oldest_waiting).total_seconds()


class RouteStats(NamedTuple):
    """One route's runs and failures in a window, and its most recent failure ever."""

    route: str
    runs: int
    failures: int
    last_failure: datetime | None
    last_exception: str | None
    last_failed_event: uuidlib.UUID | None


@dataclass(frozen=True)
class SubscriptionStats:
    """One subscription with its deliveries counted by state and its most recent error."""

    uuid: uuidlib.UUID
    name: str
    user: str
    target_url: str
    disabled: datetime | None
    disabled_reason: str | None
    delivered: int
    retrying: int
    dead: int
    failed: int
    refused: int
    last_error: str | None
    last_error_at: datetime | None


class EventDetail(NamedTuple):
    """Everything the event page shows of one event."""

    event: StoredEvent
    runs: list[RouteRunRow]
    deliveries: list[DeliveryRow]


def _aware(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite's date_trunc answers text
        value = datetime.fromisoformat(value)
    return cast(datetime, value).replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def event_flow(since: datetime) -> list[FlowBucket]:
    """Events received since ``since``, per minute of arrival and current status."""
    minute = database_proxy.obj.truncate_date("minute", EventRecord.created)
    query = (
        EventRecord.select(minute.alias("minute"), EventRecord.status, peewee.fn.COUNT(1))
        .where(EventRecord.created >= since)
        .group_by(minute, EventRecord.status)
    )
    return [
        FlowBucket(_aware(at), EventStatus(status), int(count))
        for at, status, count in cast(Iterable[tuple[Any, int, int]], query.tuples())
    ]


def queue_state() -> QueueState:
    """Waiting and processing counts and the oldest waiting event's arrival (index only)."""
    counts = dict(
        cast(
            Iterable[tuple[int, int]],
            EventRecord.select(EventRecord.status, peewee.fn.COUNT(1))
            .where(EventRecord.status.in_([int(EventStatus.ACCEPTED), int(EventStatus.PROCESSING)]))
            .group_by(EventRecord.status)
            .tuples(),
        )
    )
    oldest = (
        EventRecord.select(EventRecord.created)
        .where(EventRecord.status == int(EventStatus.ACCEPTED))
        .order_by(EventRecord.created)
        .limit(1)
        .scalar()
    )
    return QueueState(
        int(counts.get(int(EventStatus.ACCEPTED), 0)),
        int(counts.get(int(EventStatus.PROCESSING), 0)),
        None if oldest is None else EventRecord.created.python_value(oldest),
    )


def latencies(since: datetime) -> list[float]:
    """Seconds from receive to final status of the events finished since ``since``, sorted."""
    query = EventRecord.select(EventRecord.created, EventRecord.finished).where(
        (EventRecord.finished >= since)
        & EventRecord.status.in_([int(s) for s in EventStatus if s.final])
    )
    parse = EventRecord.created.python_value
    return sorted(
        max((parse(done) - parse(got)).total_seconds(), 0.0)
        for got, done in cast(Iterable[tuple[Any, Any]], query.tuples())
    )


def route_stats(since: datetime, known: Sequence[str] = ()) -> list[RouteStats]:
    """Every route seen since ``since`` (and every ``known`` one): runs, failures, last failure."""
    counted: dict[str, list[int]] = {name: [0, 0] for name in known}
    query = (
        RouteRun.select(RouteRun.route, RouteRun.status, peewee.fn.COUNT(1))
        .where(RouteRun.started >= since)
        .group_by(RouteRun.route, RouteRun.status)
    )
    for route, status, count in cast(Iterable[tuple[str, int, int]], query.tuples()):
        totals = counted.setdefault(route, [0, 0])
        totals[0] += int(count)
        if status == int(RunStatus.FAILED):
            totals[1] += int(count)
    found = []
    for route, (runs, failures) in sorted(counted.items()):
        last = (
            RouteRun.select(
                RouteRun.finished, RouteRun.exc_type, RouteRun.exc_message, RouteRun.event
            )
            .where((RouteRun.route == route) & (RouteRun.status == int(RunStatus.FAILED)))
            .order_by(RouteRun.finished.desc())
            .first()
        )
        exception = None if last is None else f"{last.exc_type}: {last.exc_message}"
        found.append(
            RouteStats(
                route,
                runs,
                failures,
                None if last is None else last.finished,
                exception,
                None if last is None else uuidlib.UUID(str(last.__data__["event"])),
            )
        )
    return found


def failed_events(route: str, limit: int = 100) -> list[uuidlib.UUID]:
    """The most recent events on which ``route`` failed."""
    query = (
        RouteRun.select(RouteRun.event)
        .where((RouteRun.route == route) & (RouteRun.status == int(RunStatus.FAILED)))
        .order_by(RouteRun.finished.desc())
        .limit(limit)
    )
    return [uuidlib.UUID(str(row.__data__["event"])) for row in query]


_COUNTED = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.DEAD: "dead",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.REJECTED: "refused",
}


def subscription_stats(user: str | None, since: datetime) -> list[SubscriptionStats]:
    """The live subscriptions of ``user`` (everyone's when None) with their deliveries counted.

    ``retrying`` counts pending deliveries that have been attempted; the last
    error is the most recent one recorded since ``since``.
    """
    subscriptions = Subscription.select().where(Subscription.deleted.is_null())
    if user is not None:
        subscriptions = subscriptions.where(Subscription.user == user)
    rows = list(subscriptions.order_by(Subscription.user, Subscription.name, Subscription.uuid))
    counts: dict[uuidlib.UUID, dict[str, int]] = {row.uuid: {} for row in rows}
    retrying = peewee.Case(None, [(Delivery.attempts > 0, 1)], 0)
    for chunk in chunks(list(counts)):
        query = (
            Delivery.select(
                Delivery.subscription, Delivery.status, peewee.fn.COUNT(1), peewee.fn.SUM(retrying)
            )
            .where(Delivery.subscription.in_(chunk))
            .group_by(Delivery.subscription, Delivery.status)
        )
        for key, status, count, tried in cast(Iterable[tuple[Any, int, int, Any]], query.tuples()):
            into = counts[uuidlib.UUID(str(key))]
            if status == int(DeliveryStatus.PENDING):
                into["retrying"] = int(tried or 0)
            elif DeliveryStatus(status) in _COUNTED:
                into[_COUNTED[DeliveryStatus(status)]] = int(count)
    found = []
    for row in rows:
        tally = counts[row.uuid]
        troubled = any(tally.get(k) for k in ("retrying", "dead", "failed", "refused"))
        last = _last_error(row.uuid, since) if troubled else None
        found.append(
            SubscriptionStats(
                row.uuid,
                row.name,
                row.user,
                row.target_url,
                row.disabled,
                row.error if row.disabled is not None else None,
                tally.get("delivered", 0),
                tally.get("retrying", 0),
                tally.get("dead", 0),
                tally.get("failed", 0),
                tally.get("refused", 0),
                None if last is None else last[0],
                None if last is None else last[1],
            )
        )
    return found


def _last_error(subscription: uuidlib.UUID, since: datetime) -> tuple[str, datetime] | None:
    row = (
        Delivery.select(Delivery.error, Delivery.updated)
        .where(
            (Delivery.subscription == subscription)
            & (Delivery.updated >= since)
            & Delivery.error.is_null(False)
        )
        .order_by(Delivery.updated.desc())
        .first()
    )
    return None if row is None else (str(row.error), row.updated)


def subscription_owner(key: uuidlib.UUID) -> str | None:
    """The user owning a live subscription, or None when there is none."""
    row = Subscription.get_or_none((Subscription.uuid == key) & Subscription.deleted.is_null())
    return None if row is None else str(row.user)


def enable_subscription(key: uuidlib.UUID) -> bool:
    """Re-enable a disabled subscription (its failure count reset); False if it was not disabled."""
    now = utcnow()
    with write_transaction():
        changed = (
            Subscription.update(disabled=None, error=None, failures=0, updated=now)
            .where((Subscription.uuid == key) & Subscription.disabled.is_null(False))
            .execute()
        )
        if changed:
            bump_revision()
    return bool(changed)


def retry_dead(key: uuidlib.UUID) -> list[int]:
    """Make a subscription's dead-lettered deliveries pending again, with a fresh budget; their ids."""
    query = Delivery.select(Delivery.id).where(
        (Delivery.subscription == key) & (Delivery.status == int(DeliveryStatus.DEAD))
    )
    ids = [row.id for row in query]
    make_pending(ids)
    return ids


def find_events(term: str, limit: int = 20) -> list[StoredEvent]:
    """Events whose task id, event id or Pacifica transaction id is ``term``, newest first."""
    condition = (EventRecord.event_id == term) | (EventRecord.transaction_id == term)
    with contextlib.suppress(ValueError):
        condition = condition | (EventRecord.uuid == uuidlib.UUID(term))
    query = EventRecord.select().where(condition).order_by(EventRecord.created.desc()).limit(limit)
    return [StoredEvent.from_record(record) for record in query]


def event_detail(key: uuidlib.UUID) -> EventDetail | None:
    """An event with its route runs and deliveries (and their logged requests)."""
    record = EventRecord.get_or_none(EventRecord.uuid == key)
    if record is None:
        return None
    return EventDetail(StoredEvent.from_record(record), route_runs(key), deliveries_of(key))


def subscription_users(keys: Iterable[uuidlib.UUID]) -> dict[uuidlib.UUID, str]:
    """The owners of these subscriptions (deleted ones too), by subscription."""
    found: dict[uuidlib.UUID, str] = {}
    for chunk in chunks(list(keys)):
        query = Subscription.select(Subscription.uuid, Subscription.name, Subscription.user)
        for row in query.where(Subscription.uuid.in_(chunk)):
            found[row.uuid] = str(row.user)
    return found


def subscription_names(keys: Iterable[uuidlib.UUID]) -> dict[uuidlib.UUID, str]:
    """The names of these subscriptions, by subscription."""
    found: dict[uuidlib.UUID, str] = {}
    for chunk in chunks(list(keys)):
        for row in Subscription.select(Subscription.uuid, Subscription.name).where(
            Subscription.uuid.in_(chunk)
        ):
            found[row.uuid] = str(row.name)
    return found


def shared_secret(name: str) -> str:
    """A random key by this name shared by every process (created on first use)."""
    row = ServerSecret.get_or_none(ServerSecret.name == name)
    if row is None:
        ServerSecret.insert(name=name, value=secrets.token_hex(32)).on_conflict_ignore().execute()
        row = ServerSecret.get(ServerSecret.name == name)
    return str(row.value)


def schema_is_current() -> bool:
    """True when the database answers and its schema is the code's (readiness)."""
    return schema_version(database_proxy.obj) == code_schema_version()
