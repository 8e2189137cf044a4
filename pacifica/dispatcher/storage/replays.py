"""Replay queries: a replay and its schedule, and how far it got.

A replay to a subscription is one ``Replay`` row and one ``Delivery`` row per
selected event, carrying the replay's id (one delivery per event, subscription
and replay); each delivery's ``next_attempt`` is its place in the schedule
(``rate`` per second). A route replay is one ``Replay`` row, its route's runs
marked ``REPLAY``, and one ``ReplayRun`` row per event with its ``due`` time.
So the database holds the throttle: whoever publishes (the command line's
pump, or any worker's housekeeping, see ``storage.pacing``) sends a message
only when it is due, and a crashed publisher loses nothing.
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
    Replay,
    ReplayRun,
    RouteRun,
    Subscription,
)
from pacifica.dispatcher.storage.statements import chunks
from pacifica.dispatcher.storage.subscriptions import SubscriptionRow
from pacifica.dispatcher.storage.values import DeliveryStatus, RunStatus, utcnow


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
    failed: int  # final without success: rejected, failed, dead or cancelled (route: failed)
    kind: str = "subscription"  # or "route": delivered counts runs that succeeded
    user: str = "cli"  # who asked for it

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
        key = _insert(replay, len(events), begin)
        for first in range(0, len(events), 200):  # a chunk at a time: a big replay stays small
            rows = [
                {
                    "event": event,
                    "subscription": replay.subscription,
                    "replay": key,
                    "next_attempt": begin + n * step,
                    "budget_start": begin + n * step,
                }
                for n, event in enumerate(events[first : first + 200], first)
            ]
            Delivery.insert_many(rows).on_conflict_ignore().execute()
    return key


def progress(replay: int) -> ReplayProgress | None:
    """How many of the replay's deliveries (or route runs) succeeded, wait, or ended otherwise;
    None when there is no such replay."""
    row = Replay.get_or_none(Replay.id == replay)
    if row is None:
        return None
    if row.kind == "route":
        counts, waiting = _route_counts(replay, str(row.route))
    else:
        query = (
            Delivery.select(Delivery.status, peewee.fn.COUNT(Delivery.id))
            .where(Delivery.replay == replay)
            .group_by(Delivery.status)
        )
        rows = cast(list[tuple[int, int]], list(query.tuples()))
        counts = {DeliveryStatus(status): count for status, count in rows}
        waiting = 0
    total = sum(counts.values()) + waiting
    delivered = counts.get(DeliveryStatus.DELIVERED, 0)
    pending = counts.get(DeliveryStatus.PENDING, 0) + waiting
    return ReplayProgress(
        replay, total, delivered, pending, total - delivered - pending, row.kind, row.user
    )


def _route_counts(replay: int, route: str) -> tuple[dict[DeliveryStatus, int], int]:
    """A route replay's published runs by outcome (in deliveries' terms: succeeded is
    delivered, still to run is pending), and how many are not published yet."""
    query = (
        ReplayRun.select(RouteRun.status, peewee.fn.COUNT(ReplayRun.id))
        .join(RouteRun, on=(RouteRun.event == ReplayRun.event) & (RouteRun.route == route))
        .where((ReplayRun.replay == replay) & ReplayRun.enqueued.is_null(False))
        .group_by(RouteRun.status)
    )
    rows = cast(list[tuple[int, int]], list(query.tuples()))
    outcome = {
        RunStatus.SUCCEEDED: DeliveryStatus.DELIVERED,
        RunStatus.FAILED: DeliveryStatus.FAILED,
    }
    counts: dict[DeliveryStatus, int] = {}
    for status, count in rows:
        kind = outcome.get(RunStatus(status), DeliveryStatus.PENDING)
        counts[kind] = counts.get(kind, 0) + count
    waiting = (
        ReplayRun.select()
        .where((ReplayRun.replay == replay) & ReplayRun.enqueued.is_null())
        .count()
    )
    return counts, waiting


def subscription_by_id(key: uuidlib.UUID) -> SubscriptionRow | None:
    """Any user's live subscription with this id (the command line acts for every user)."""
    record = Subscription.get_or_none((Subscription.uuid == key) & Subscription.deleted.is_null())
    return None if record is None else SubscriptionRow.from_record(record)


def create_route_replay(
    replay: NewReplay,
    candidates: Sequence[uuidlib.UUID],
    only_failed: bool,
    start: datetime | None = None,
) -> tuple[int, list[uuidlib.UUID]]:
    """Mark the route's runs among ``candidates`` (its failed runs, or all) to run again and
    schedule their events, one every ``1/rate`` seconds from ``start``; the replay's id and
    the events, oldest first.

    The events stay as they are until a publisher claims them when due (``storage.pacing``);
    the next processing of such an event runs only the marked routes (``dispatch``).
    """
    begin = start or utcnow()
    step = timedelta(seconds=1.0 / replay.rate)
    with write_transaction():
        found = with_route_runs(str(replay.route), candidates, only_failed)
        chosen = [key for key in candidates if key in found]
        key = _insert(replay, len(chosen), begin)
        for first in range(0, len(chosen), 500):
            chunk = chosen[first : first + 500]
            RouteRun.update(status=int(RunStatus.REPLAY), updated=begin).where(
                (RouteRun.route == replay.route) & RouteRun.event.in_(chunk)
            ).execute()
            rows = [
                {"replay": key, "event": event, "due": begin + (first + n) * step}
                for n, event in enumerate(chunk)
            ]
            ReplayRun.insert_many(rows).execute()
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


def _insert(replay: NewReplay, total: int, start: datetime) -> int:
    """Store a replay's row (call inside a transaction), its schedule starting at ``start``;
    its id."""
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
            paced=start,
        ).execute()
    )
