"""The durable side of delivery: one row per (event, subscription), every attempt logged.

The database decides what is due: a delivery is PENDING until it succeeds or
ends, with ``next_attempt`` saying when it may run again. A worker takes a
short lease before attempting, so a duplicate broker message, a countdown
message and the sweeper never attempt one delivery twice at once, and a
worker that dies mid-attempt only delays it until the lease runs out.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pacifica.dispatcher.storage import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EventRecord,
    Subscription,
    utcnow,
    write_transaction,
)
from pacifica.dispatcher.subscriptions import bump_revision

EXCERPT_BYTES = 1024
EARLY_TOLERANCE = 2.0  # seconds a countdown message may arrive early (clock skew between hosts)


@dataclass(frozen=True)
class DeliveryResult:
    """One HTTP request's outcome: a status code, or ``error`` when there was no answer."""

    status_code: int | None
    excerpt: str
    duration: float
    error: str | None = None
    retry_after: float | None = None


def record_matches(event: uuidlib.UUID, subscriptions: Iterable[str]) -> list[int]:
    """Create the deliveries of an event (once per pair) and return the ids due now."""
    now = utcnow()
    rows = [
        {"event": event, "subscription": uuidlib.UUID(s), "next_attempt": now, "budget_start": now}
        for s in subscriptions
    ]
    if rows:
        Delivery.insert_many(rows).on_conflict_ignore().execute()
    return due_for_event(event, now)


def due_for_event(event: uuidlib.UUID, now: datetime) -> list[int]:
    """Ids of the event's pending deliveries that may run now."""
    query = Delivery.select(Delivery.id).where(
        (Delivery.event == event)
        & (Delivery.status == int(DeliveryStatus.PENDING))
        & (Delivery.next_attempt <= now)
    )
    return [row.id for row in query.order_by(Delivery.id)]


def claim(delivery_id: int, lease: float, now: datetime) -> Delivery | None:
    """Lease a due, pending delivery for one attempt; None when it is not due or already leased."""
    taken: int = (
        Delivery.update(
            lease_until=now + timedelta(seconds=lease),
            attempts=Delivery.attempts + 1,
            updated=now,
        )
        .where(
            (Delivery.id == delivery_id)
            & (Delivery.status == int(DeliveryStatus.PENDING))
            & (Delivery.next_attempt <= now + timedelta(seconds=EARLY_TOLERANCE))
            & (Delivery.lease_until.is_null() | (Delivery.lease_until < now))
        )
        .execute()
    )
    return Delivery.get_by_id(delivery_id) if taken == 1 else None


def record_attempt(delivery: Delivery, kind: str, result: DeliveryResult) -> None:
    """Log one request made for a delivery."""
    DeliveryAttempt.create(
        delivery=delivery.id,
        number=delivery.attempts,
        kind=kind,
        status_code=result.status_code,
        response=result.excerpt or None,
        error=result.error,
        duration=result.duration,
    )


def save(delivery: Delivery, status: DeliveryStatus, **values: Any) -> None:
    """Store a delivery's new state; a final state releases the lease and stamps ``finished``."""
    now = utcnow()
    values.update(status=int(status), lease_until=None, updated=now)
    if status.final:
        values.update(finished=now, next_attempt=None)
    Delivery.update(**values).where(Delivery.id == delivery.id).execute()


def note_policy(delivery: Delivery, result: DeliveryResult) -> None:
    """Remember the policy's yes, keeping the lease: retries do not ask again."""
    Delivery.update(
        policy_status=result.status_code, policy_body=result.excerpt, updated=utcnow()
    ).where(Delivery.id == delivery.id).execute()


def note_delivered(subscription: Subscription) -> None:
    """A success resets the subscription's run of undeliverable events."""
    if subscription.failures:
        Subscription.update(failures=0, updated=utcnow()).where(
            Subscription.uuid == subscription.uuid
        ).execute()


def note_undeliverable(subscription: Subscription, reason: str, disable_after: int) -> bool:
    """Count a dead-lettered or refused delivery; disable after ``disable_after`` in a row.

    Returns True when this call disabled the subscription.
    """
    key = subscription.uuid
    with write_transaction():
        Subscription.update(failures=Subscription.failures + 1, updated=utcnow()).where(
            Subscription.uuid == key
        ).execute()
        now = utcnow()
        disabled: int = (
            Subscription.update(
                disabled=now,
                error=f"disabled after {disable_after} undeliverable event(s); last: {reason}",
                updated=now,
            )
            .where(
                (Subscription.uuid == key)
                & Subscription.disabled.is_null()
                & (Subscription.failures >= disable_after)
            )
            .execute()
        )
        if disabled:
            bump_revision()
    return disabled == 1


def sweep_due(grace: float, limit: int = 500) -> list[int]:
    """Claim pending deliveries overdue by ``grace`` seconds (their message was lost or never sent)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace)
    query = (
        Delivery.select(Delivery.id, Delivery.enqueued)
        .where(
            (Delivery.status == int(DeliveryStatus.PENDING))
            & (Delivery.next_attempt <= cutoff)
            & (Delivery.lease_until.is_null() | (Delivery.lease_until < now))
            & (Delivery.enqueued.is_null() | (Delivery.enqueued < cutoff))
        )
        .order_by(Delivery.next_attempt)
        .limit(limit)
    )
    claimed = []
    for row in query:
        seen = (
            Delivery.enqueued.is_null()
            if row.enqueued is None
            else Delivery.enqueued == row.enqueued
        )
        if Delivery.update(enqueued=now).where((Delivery.id == row.id) & seen).execute() == 1:
            claimed.append(row.id)
    return claimed


def mark_enqueued(delivery_ids: Iterable[int]) -> None:
    """Record that the broker took these deliveries' messages."""
    ids = list(delivery_ids)
    if ids:
        Delivery.update(enqueued=utcnow()).where(Delivery.id.in_(ids)).execute()


def reset_for_retry(event_ids: Iterable[uuidlib.UUID]) -> list[int]:
    """Make the events' dead, failed, refused or cancelled deliveries pending again, with a fresh budget."""
    now = utcnow()
    query = Delivery.select(Delivery.id).where(
        Delivery.event.in_(list(event_ids))
        & (Delivery.status != int(DeliveryStatus.PENDING))
        & (Delivery.status != int(DeliveryStatus.DELIVERED))
    )
    ids = [row.id for row in query]
    if ids:
        Delivery.update(
            status=int(DeliveryStatus.PENDING),
            attempts=0,
            next_attempt=now,
            budget_start=now,
            lease_until=None,
            enqueued=None,
            finished=None,
            policy_status=None,
            updated=now,
        ).where(Delivery.id.in_(ids)).execute()
    return ids


def purge_orphans() -> int:
    """Delete deliveries (and their attempts) whose event was purged; return how many."""
    live = EventRecord.select(EventRecord.uuid)
    orphans = [row.id for row in Delivery.select(Delivery.id).where(Delivery.event.not_in(live))]
    deleted = 0
    for start in range(0, len(orphans), 500):
        chunk = orphans[start : start + 500]
        with write_transaction():
            DeliveryAttempt.delete().where(DeliveryAttempt.delivery.in_(chunk)).execute()
            deleted += Delivery.delete().where(Delivery.id.in_(chunk)).execute()
    return int(deleted)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def describe(event: uuidlib.UUID) -> list[dict[str, Any]]:
    """Every delivery of an event with its attempts, for ``events get``."""
    rows = Delivery.select().where(Delivery.event == event).order_by(Delivery.id)
    return [
        {
            "subscription": str(row.subscription.uuid),
            "status": row.delivery_status.name,
            "policy": row.policy_status,
            "target": row.target_status,
            "attempts": row.attempts,
            "nextAttempt": _iso(row.next_attempt),
            "error": row.error,
            "created": _iso(row.created),
            "log": [
                {
                    "number": a.number,
                    "kind": a.kind,
                    "status": a.status_code,
                    "error": a.error,
                    "duration": round(a.duration, 4),
                    "time": _iso(a.created),
                }
                for a in DeliveryAttempt.select()
                .where(DeliveryAttempt.delivery == row.id)
                .order_by(DeliveryAttempt.id)
            ],
        }
        for row in rows
    ]
