"""Delivery queries: one row per (event, subscription), a lease per attempt, every request logged.

The database decides what is due: a delivery is PENDING until it succeeds or
ends, with ``next_attempt`` saying when it may run again. A worker takes a
lease before attempting, so a duplicate broker message, a countdown message
and the sweeper never attempt one delivery twice at once. An attempt's
outcome is recorded in one transaction (``record_attempt``): its requests,
the delivery's new state and the subscription's run of failures.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from pacifica.dispatcher.storage.database import write_transaction
from pacifica.dispatcher.storage.schema import (
    Delivery,
    DeliveryAttempt,
    EventRecord,
    HostSlot,
    Replay,
    Subscription,
)
from pacifica.dispatcher.storage.statements import SWEEP_BATCH, chunks, claim_unsent
from pacifica.dispatcher.storage.subscriptions import SubscriptionRow, bump_revision
from pacifica.dispatcher.storage.values import DeliveryStatus, utcnow

EARLY_TOLERANCE = 2.0  # seconds a countdown message may arrive early (clock skew between hosts)


@dataclass(frozen=True)
class DeliveryJob:
    """A leased delivery: what one attempt needs to know."""

    id: int
    uuid: uuidlib.UUID
    attempts: int
    budget_start: datetime
    policy_status: int | None
    document: Any
    subscription: SubscriptionRow
    replay: int = 0  # the replay this delivery belongs to (0: the original delivery)


class RequestLog(NamedTuple):
    """One HTTP request made for a delivery (``kind`` "policy" or "target")."""

    kind: str
    status_code: int | None
    excerpt: str
    duration: float
    error: str | None = None


@dataclass(frozen=True)
class AttemptRecord:
    """What one attempt decided: the new status, the requests made, and why.

    ``undeliverable`` (the reason) counts the attempt toward disabling the
    subscription; a DELIVERED attempt resets that count.
    """

    status: DeliveryStatus
    requests: tuple[RequestLog, ...] = ()
    error: str | None = None
    next_attempt: datetime | None = None
    undeliverable: str | None = None


class DeliveryRow(NamedTuple):
    """A delivery as ``events get`` shows it."""

    subscription: uuidlib.UUID
    status: DeliveryStatus
    policy_status: int | None
    target_status: int | None
    attempts: int
    next_attempt: datetime | None
    error: str | None
    created: datetime
    requests: list[AttemptRow]


class AttemptRow(NamedTuple):
    """One logged request of a delivery."""

    number: int
    kind: str
    status_code: int | None
    error: str | None
    duration: float
    created: datetime


def record_matches(event: uuidlib.UUID, subscriptions: Iterable[str]) -> list[int]:
    """Create the deliveries of an event (once per pair) and return the ids due now."""
    now = utcnow()
    rows = [
        {"event": event, "subscription": uuidlib.UUID(s), "next_attempt": now, "budget_start": now}
        for s in subscriptions
    ]
    if rows:
        Delivery.insert_many(rows).on_conflict_ignore().execute()
    query = Delivery.select(Delivery.id).where(
        (Delivery.event == event)
        & (Delivery.replay == 0)  # a replay's deliveries keep their own schedule
        & (Delivery.status == int(DeliveryStatus.PENDING))
        & (Delivery.next_attempt <= now)
    )
    return [row.id for row in query.order_by(Delivery.id)]


def claim(
    delivery_id: int, lease: float, now: datetime, holder: str | None = None
) -> DeliveryJob | None:
    """Lease a due, pending delivery for one attempt; None when it is not due or already leased."""
    taken: int = (
        Delivery.update(
            lease_until=now + timedelta(seconds=lease),
            attempts=Delivery.attempts + 1,
            updated=now,
            holder=holder,
        )
        .where(
            (Delivery.id == delivery_id)
            & (Delivery.status == int(DeliveryStatus.PENDING))
            & (Delivery.next_attempt <= now + timedelta(seconds=EARLY_TOLERANCE))
            & (Delivery.lease_until.is_null() | (Delivery.lease_until < now))
        )
        .execute()
    )
    if taken != 1:
        return None
    row = (
        Delivery.select(Delivery, EventRecord.document, Subscription)
        .join_from(Delivery, EventRecord)
        .join_from(Delivery, Subscription)
        .where(Delivery.id == delivery_id)
        .get()
    )
    return DeliveryJob(
        id=row.id,
        uuid=row.uuid,
        attempts=row.attempts,
        budget_start=row.budget_start,
        policy_status=row.policy_status,
        document=row.event.document,
        subscription=SubscriptionRow.from_record(row.subscription),
        replay=row.replay,
    )


def record_attempt(job: DeliveryJob, record: AttemptRecord, disable_after: int) -> bool:
    """Store an attempt's requests and outcome, and count it for the subscription, atomically.

    A final status releases the lease and stamps ``finished``. A delivered
    attempt resets the subscription's consecutive failures; an undeliverable
    one adds one and disables the subscription at ``disable_after``. Returns
    True when this call disabled it.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "status": int(record.status),
        "lease_until": None,
        "holder": None,
        "updated": now,
        "error": record.error,
        "next_attempt": record.next_attempt,
    }
    for request in record.requests:
        values[f"{request.kind}_status"] = request.status_code
        values[f"{request.kind}_body"] = request.excerpt
    if record.status.final:
        values.update(finished=now, next_attempt=None)
    with write_transaction():
        for request in record.requests:
            DeliveryAttempt.create(
                delivery=job.id,
                number=job.attempts,
                kind=request.kind,
                status_code=request.status_code,
                response=request.excerpt or None,
                error=request.error,
                duration=request.duration,
                created=now,
            )
        Delivery.update(**values).where(Delivery.id == job.id).execute()
        HostSlot.update(delivery=None, lease_until=None).where(
            HostSlot.delivery == job.id
        ).execute()
        if record.status is DeliveryStatus.DELIVERED:
            Subscription.update(failures=0, updated=now).where(
                (Subscription.uuid == job.subscription.uuid) & (Subscription.failures != 0)
            ).execute()
        if record.undeliverable is not None:
            return _count_failure(job.subscription.uuid, record.undeliverable, disable_after, now)
    return False


def take_host_slot(host: str, delivery_id: int, limit: int, lease: float, now: datetime) -> bool:
    """Hold one of ``host``'s ``limit`` slots for a delivery; False when all are held.

    Each slot is taken by one conditional UPDATE, so two workers never hold
    the same slot on any database; a slot whose holder died frees itself when
    its lease ends. ``record_attempt`` gives it back.
    """
    HostSlot.insert_many(
        [{"host": host, "slot": n} for n in range(limit)]
    ).on_conflict_ignore().execute()
    for slot in range(limit):
        taken: int = (
            HostSlot.update(delivery=delivery_id, lease_until=now + timedelta(seconds=lease))
            .where(
                (HostSlot.host == host)
                & (HostSlot.slot == slot)
                & (HostSlot.lease_until.is_null() | (HostSlot.lease_until < now))
            )
            .execute()
        )
        if taken == 1:
            return True
    return False


def release_claim(job: DeliveryJob) -> None:
    """Give back a lease taken by ``claim`` without attempting (the target host was busy)."""
    Delivery.update(lease_until=None, attempts=Delivery.attempts - 1, updated=utcnow()).where(
        Delivery.id == job.id
    ).execute()


def _count_failure(key: uuidlib.UUID, reason: str, disable_after: int, now: datetime) -> bool:
    Subscription.update(failures=Subscription.failures + 1, updated=now).where(
        Subscription.uuid == key
    ).execute()
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


def claim_overdue(grace: float, limit: int = SWEEP_BATCH) -> list[int]:
    """Claim pending deliveries overdue by ``grace`` seconds (the deliveries' side of the outbox sweep)."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace)
    query = (
        Delivery.select(Delivery.id, Delivery.enqueued)
        .where(
            (Delivery.status == int(DeliveryStatus.PENDING))
            & (Delivery.next_attempt <= cutoff)
            & (Delivery.lease_until.is_null() | (Delivery.lease_until < now))
            & (Delivery.enqueued.is_null() | (Delivery.enqueued < cutoff))
            # a going replay's unsent deliveries are paced (storage.pacing), not swept at once
            & ~(
                Delivery.enqueued.is_null()
                & (Delivery.replay != 0)
                & Delivery.replay.in_(Replay.select(Replay.id).where(Replay.released.is_null()))
            )
        )
        .order_by(Delivery.next_attempt)
        .limit(limit)
    )
    return claim_unsent(Delivery, "id", [(r.id, r.enqueued) for r in query], now)


def mark_enqueued(delivery_ids: Sequence[int]) -> None:
    """Record that the broker took these deliveries' messages."""
    now = utcnow()
    for chunk in chunks(delivery_ids):
        Delivery.update(enqueued=now, updated=now).where(Delivery.id.in_(chunk)).execute()


def reset_for_retry(event_ids: Iterable[uuidlib.UUID]) -> list[int]:
    """Make the events' dead, failed, refused or cancelled deliveries pending again, with a fresh budget."""
    query = Delivery.select(Delivery.id).where(
        Delivery.event.in_(list(event_ids))
        & (Delivery.status != int(DeliveryStatus.PENDING))
        & (Delivery.status != int(DeliveryStatus.DELIVERED))
    )
    ids = [row.id for row in query]
    make_pending(ids)
    return ids


def make_pending(delivery_ids: Sequence[int]) -> None:
    """Start deliveries over: pending now, no attempts, a fresh age budget, the policy asked again."""
    now = utcnow()
    for chunk in chunks(delivery_ids):
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
        ).where(Delivery.id.in_(chunk)).execute()


def delete_deliveries_of(events: Sequence[uuidlib.UUID]) -> int:
    """Delete the deliveries of these events and their logged requests (inside the caller's
    transaction, with the events); return how many deliveries went."""
    keys = list(events)
    of_events = Delivery.select(Delivery.id).where(Delivery.event.in_(keys))
    DeliveryAttempt.delete().where(DeliveryAttempt.delivery.in_(of_events)).execute()
    return int(Delivery.delete().where(Delivery.event.in_(keys)).execute())


def deliveries_of(event: uuidlib.UUID) -> list[DeliveryRow]:
    """Every delivery of an event with its logged requests, oldest first."""
    columns = (
        Delivery.id,
        Delivery.subscription,
        Delivery.status,
        Delivery.policy_status,
        Delivery.target_status,
        Delivery.attempts,
        Delivery.next_attempt,
        Delivery.error,
        Delivery.created,
    )
    query = Delivery.select(*columns).where(Delivery.event == event).order_by(Delivery.id)
    rows = cast(list[tuple[Any, ...]], list(query.tuples()))
    requests: dict[int, list[AttemptRow]] = {row[0]: [] for row in rows}
    if rows:
        logged = DeliveryAttempt.select(
            DeliveryAttempt.delivery,
            DeliveryAttempt.number,
            DeliveryAttempt.kind,
            DeliveryAttempt.status_code,
            DeliveryAttempt.error,
            DeliveryAttempt.duration,
            DeliveryAttempt.created,
        ).where(DeliveryAttempt.delivery.in_(list(requests)))
        for delivery, *fields in cast(
            Iterable[tuple[Any, ...]], logged.order_by(DeliveryAttempt.id).tuples()
        ):
            requests[delivery].append(AttemptRow(*fields))
    return [
        DeliveryRow(
            subscription,
            DeliveryStatus(status),
            policy,
            target,
            attempts,
            next_attempt,
            error,
            created,
            requests[key],
        )
        for key, subscription, status, policy, target, attempts, next_attempt, error, created in rows
    ]
