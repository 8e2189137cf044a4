"""Replay queries: a replay and its scheduled deliveries, what is due, and how far it got.

A replay to a subscription is one ``Replay`` row and one ``Delivery`` row per
selected event, carrying the replay's id (one delivery per event, subscription
and replay). Each delivery's ``next_attempt`` is its place in the schedule
(``rate`` per second), so the database holds the throttle: whoever publishes
(the command line's pump, or any worker's outbox sweep once a row is overdue)
sends a delivery only when it is due, and a crashed publisher loses nothing.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import peewee

from pacifica.dispatcher.storage.database import write_transaction
from pacifica.dispatcher.storage.schema import (
    Delivery,
    EventRecord,
    Replay,
    RouteRun,
    Subscription,
)
from pacifica.dispatcher.storage.statements import chunks, claim_unsent
from pacifica.dispatcher.storage.subscriptions import SubscriptionRow
from pacifica.dispatcher.storage.values import DeliveryStatus, EventStatus, RunStatus, utcnow


@dataclass(frozen=True)
class NewReplay:
    """What a replay is asked to do."""

    kind: str  # "subscription" or "route"
    user: str
    rate: float
    subscription: uuidlib.UUID | None = None
    route: str | None = None
    jsonpath: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class ReplayProgress:
    """Where a replay's deliveries stand."""

    replay: int
    total: int
    delivered: int
    pending: int
    failed: int  # final without success: rejected, failed, dead or cancelled

    @property
    def done(self) -> bool:
        """True once no delivery of the replay is pending."""
        return self.pending == 0


def create_delivery_replay(
    replay: NewReplay, events: Sequence[uuidlib.UUID], start: datetime | None = None
) -> int:
    """Store a replay and its deliveries, one every ``1/rate`` seconds from ``start``; its id."""
    begin = start or utcnow()
    step = timedelta(seconds=1.0 / replay.rate)
    with write_transaction():
        key = _insert(replay, len(events))
        rows = [
            {
                "event": event,
                "subscription": replay.subscription,
                "replay": key,
                "next_attempt": begin + n * step,
                "budget_start": begin + n * step,
            }
            for n, event in enumerate(events)
        ]
        for chunk in chunks(rows, 200):
            Delivery.insert_many(chunk).on_conflict_ignore().execute()
    return key


def claim_due(replay: int, limit: int = 500) -> list[int]:
    """Claim the replay's deliveries that are due and were never sent (for publishing now)."""
    now = utcnow()
    query = (
        Delivery.select(Delivery.id, Delivery.enqueued)
        .where(
            (Delivery.replay == replay)
            & (Delivery.status == int(DeliveryStatus.PENDING))
            & Delivery.enqueued.is_null()
            & (Delivery.next_attempt <= now)
        )
        .order_by(Delivery.next_attempt)
        .limit(limit)
    )
    return claim_unsent(Delivery, "id", [(r.id, r.enqueued) for r in query], now)


def progress(replay: int) -> ReplayProgress:
    """How many of the replay's deliveries succeeded, wait, or ended otherwise."""
    query = (
        Delivery.select(Delivery.status, peewee.fn.COUNT(Delivery.id))
        .where(Delivery.replay == replay)
        .group_by(Delivery.status)
    )
    rows = cast(list[tuple[int, int]], list(query.tuples()))
    counts = {DeliveryStatus(status): count for status, count in rows}
    total = sum(counts.values())
    delivered = counts.get(DeliveryStatus.DELIVERED, 0)
    pending = counts.get(DeliveryStatus.PENDING, 0)
    return ReplayProgress(replay, total, delivered, pending, total - delivered - pending)


def subscription_by_id(key: uuidlib.UUID) -> SubscriptionRow | None:
    """Any user's live subscription with this id (the command line acts for every user)."""
    record = Subscription.get_or_none((Subscription.uuid == key) & Subscription.deleted.is_null())
    return None if record is None else SubscriptionRow.from_record(record)


def mark_route_replay(
    replay: NewReplay, candidates: Sequence[uuidlib.UUID], only_failed: bool
) -> tuple[int, list[uuidlib.UUID]]:
    """Mark the route's runs among ``candidates`` (its failed runs, or all) to run again and put
    their events back to ``202 Accepted``; the replay's id and the events, oldest first.

    The next processing of such an event runs only the marked routes (``dispatch``).
    """
    with write_transaction():
        found = with_route_runs(str(replay.route), candidates, only_failed)
        chosen = [key for key in candidates if key in found]
        key = _insert(replay, len(chosen))
        now = utcnow()
        for chunk in chunks(chosen):
            RouteRun.update(status=int(RunStatus.REPLAY), updated=now).where(
                (RouteRun.route == replay.route) & RouteRun.event.in_(list(chunk))
            ).execute()
            EventRecord.update(
                status=int(EventStatus.ACCEPTED), enqueued=None, finished=None, updated=now
            ).where(EventRecord.uuid.in_(list(chunk))).execute()
    return key, chosen


def with_route_runs(
    route: str, candidates: Sequence[uuidlib.UUID], only_failed: bool
) -> set[uuidlib.UUID]:
    """Which of ``candidates`` have a run of ``route`` (a failed one, or any) to repeat."""
    wanted = [RunStatus.FAILED] if only_failed else [RunStatus.FAILED, RunStatus.SUCCEEDED]
    found: set[uuidlib.UUID] = set()
    for chunk in chunks(candidates):
        query = RouteRun.select(RouteRun.event).where(
            (RouteRun.route == route)
            & RouteRun.event.in_(list(chunk))
            & RouteRun.status.in_([int(s) for s in wanted])
        )
        found.update(row[0] for row in cast(list[tuple[uuidlib.UUID]], list(query.tuples())))
    return found


def _insert(replay: NewReplay, total: int) -> int:
    """Store a replay's row (call inside a transaction); its id."""
    return int(
        Replay.insert(
            kind=replay.kind,
            subscription=replay.subscription,
            route=replay.route,
            user=replay.user,
            jsonpath=replay.jsonpath,
            since=replay.since,
            until=replay.until,
            rate=replay.rate,
            total=total,
        ).execute()
    )
