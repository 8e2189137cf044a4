"""Replay pacing: whose turn it is to publish a replay's messages, and what is due by then.

Every replay's schedule is in the database: a subscription replay's
deliveries carry their time in ``next_attempt``, a route replay's events in
``ReplayRun.due`` (``rate`` per second from its start). Any publisher (the
command line's pump, every worker's housekeeping) takes a *turn* on a replay
(a compare-and-set on the replay's ``paced`` time, so one publisher a turn)
and claims, in schedule order, what is due by the turn's cutoff.

A turn moves the schedule on by at most ``SLACK`` seconds: when no
publisher looked for longer while messages were due (the pump and the
workers were down, or a publisher stalled), the rest of the schedule is
pushed back by the excess (``Replay.lag``) instead of everything overdue
going at once. So no turn publishes more than ``rate * SLACK`` (plus one),
and after a crash a replay goes on at its rate.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import peewee

from pacifica.dispatcher.storage.database import write_transaction
from pacifica.dispatcher.storage.migrations import REPLAYED
from pacifica.dispatcher.storage.schema import Delivery, EventRecord, Replay, ReplayRun
from pacifica.dispatcher.storage.statements import SWEEP_BATCH, claim_unsent
from pacifica.dispatcher.storage.values import DeliveryStatus, EventStatus, utcnow

SLACK = 0.25  # seconds of schedule one turn may publish (publishers look every 0.1 s)


@dataclass(frozen=True)
class Turn:
    """One publisher's turn on one replay: publish what was scheduled up to ``cutoff``."""

    replay: int
    kind: str  # "subscription" or "route"
    cutoff: datetime


def active() -> list[int]:
    """The replays with messages not yet published, oldest first."""
    query = Replay.select(Replay.id).where(Replay.released.is_null()).order_by(Replay.id)
    return [row.id for row in query]


def take_turn(replay: int, now: datetime | None = None, slack: float = SLACK) -> Turn | None:
    """This publisher's turn on ``replay``; None when it is finished or another publisher
    took the turn since it was read."""
    now = now or utcnow()
    row = Replay.get_or_none(Replay.id == replay)
    if row is None or row.released is not None:
        return None
    last = row.paced or row.created
    lag = float(row.lag)
    gap = (now - last).total_seconds()
    if gap > slack:  # nobody looked for a while: push back what fell due meanwhile
        first = _first_unsent(row.kind, replay)
        if first is not None:
            overdue = (now - first).total_seconds() - lag
            lag += max(0.0, min(gap, overdue) - slack)
    seen = Replay.paced.is_null() if row.paced is None else Replay.paced == row.paced
    took = (
        Replay.update(paced=now, lag=lag, updated=now).where((Replay.id == replay) & seen).execute()
    )
    return Turn(replay, row.kind, now - timedelta(seconds=lag)) if took == 1 else None


def claim_deliveries(turn: Turn, limit: int = SWEEP_BATCH) -> list[int]:
    """Claim a subscription replay's deliveries due by the turn, never sent, in schedule order."""
    now = utcnow()
    query = (
        Delivery.select(Delivery.id, Delivery.enqueued)
        .where(
            (Delivery.replay == turn.replay)
            & REPLAYED  # the partial index's own condition (migration 11), verbatim
            & Delivery.enqueued.is_null()
            & (Delivery.next_attempt <= turn.cutoff)
            & (Delivery.status == int(DeliveryStatus.PENDING))
        )
        .order_by(Delivery.next_attempt, Delivery.id)
        .limit(limit)
    )
    return claim_unsent(Delivery, "id", [(r.id, r.enqueued) for r in query], now)


def claim_runs(turn: Turn, limit: int = SWEEP_BATCH) -> list[str]:
    """Claim a route replay's events due by the turn, in schedule order, and put them back to
    ``202 Accepted`` (marked sent now: the events' sweep sends one again if it is lost)."""
    now = utcnow()
    with write_transaction():
        query = (
            ReplayRun.select(ReplayRun.id, ReplayRun.event, ReplayRun.enqueued)
            .where(
                (ReplayRun.replay == turn.replay)
                & ReplayRun.enqueued.is_null()
                & (ReplayRun.due <= turn.cutoff)
            )
            .order_by(ReplayRun.due, ReplayRun.id)
            .limit(limit)
        )
        rows = list(query)
        claimed = set(claim_unsent(ReplayRun, "id", [(r.id, r.enqueued) for r in rows], now))
        keys: list[uuidlib.UUID] = [r.event for r in rows if r.id in claimed]
        if keys:
            EventRecord.update(
                status=int(EventStatus.ACCEPTED), enqueued=now, finished=None, updated=now
            ).where(EventRecord.uuid.in_(keys)).execute()
    return [str(k) for k in keys]


def finish_if_done(turn: Turn) -> bool:
    """Record that the replay published its last message, if it did; whether it did."""
    if _first_unsent(turn.kind, turn.replay) is not None:
        return False
    now = utcnow()
    Replay.update(released=now, updated=now).where(Replay.id == turn.replay).execute()
    return True


def _first_unsent(kind: str, replay: int) -> datetime | None:
    """When the replay's first message not yet published is scheduled; None if none is left."""
    if kind == "route":
        field: peewee.Field = ReplayRun.due
        query: Any = ReplayRun.select(peewee.fn.MIN(field)).where(
            (ReplayRun.replay == replay) & ReplayRun.enqueued.is_null()
        )
    else:
        field = Delivery.next_attempt
        query = Delivery.select(peewee.fn.MIN(field)).where(
            (Delivery.replay == replay)
            & REPLAYED
            & Delivery.enqueued.is_null()
            & (Delivery.status == int(DeliveryStatus.PENDING))
        )
    value = query.scalar()
    return None if value is None else cast(datetime, field.python_value(value))
