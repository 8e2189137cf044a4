"""Worker heartbeats: each worker says it is alive; the events and deliveries held by a worker
that stopped saying so go back to be sent again, long before ``PROCESSING_LEASE`` runs out."""

from __future__ import annotations

from datetime import timedelta

from pacifica.dispatcher.storage.database import write_transaction
from pacifica.dispatcher.storage.schema import Delivery, EventRecord, WorkerBeat
from pacifica.dispatcher.storage.values import DeliveryStatus, EventStatus, utcnow


def beat(name: str) -> None:
    """Record that the worker ``name`` is alive now."""
    now = utcnow()
    WorkerBeat.insert(name=name, heartbeat=now, started=now).on_conflict(
        conflict_target=[WorkerBeat.name], update={WorkerBeat.heartbeat: now}
    ).execute()


def forget(name: str) -> None:
    """Remove a worker that shut down cleanly (its work is finished or handed back)."""
    WorkerBeat.delete().where(WorkerBeat.name == name).execute()


def release_dead(dead_after: float) -> list[str]:
    """Give back what workers silent for ``dead_after`` seconds held; the events' task ids.

    A worker is dead when its last heartbeat is older than that (or it never
    recorded one and its work started longer ago). Its events return to
    ``202 Accepted`` with no message sent (the caller sends them); its
    deliveries lose their lease, so the sweep sends them again. Dead
    workers' rows are removed.
    """
    cutoff = utcnow() - timedelta(seconds=dead_after)
    alive = WorkerBeat.select(WorkerBeat.name).where(WorkerBeat.heartbeat >= cutoff)
    held = EventRecord.select(EventRecord.uuid).where(
        (EventRecord.status == int(EventStatus.PROCESSING))
        & EventRecord.holder.is_null(False)
        & EventRecord.holder.not_in(alive)
        & (EventRecord.started < cutoff)
    )
    keys = [row.uuid for row in held]
    now = utcnow()
    with write_transaction():
        if keys:
            EventRecord.update(
                status=int(EventStatus.ACCEPTED),
                claimed_by=None,
                holder=None,
                enqueued=None,
                updated=now,
            ).where(
                EventRecord.uuid.in_(keys) & (EventRecord.status == int(EventStatus.PROCESSING))
            ).execute()
        Delivery.update(lease_until=None, holder=None, enqueued=None, updated=now).where(
            (Delivery.status == int(DeliveryStatus.PENDING))
            & Delivery.holder.is_null(False)
            & Delivery.holder.not_in(alive)
            & (Delivery.updated < cutoff)
        ).execute()
        WorkerBeat.delete().where(WorkerBeat.heartbeat < cutoff).execute()
    return [str(k) for k in keys]
