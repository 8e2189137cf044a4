"""Subscription queries: the registry's rows, the active JSONPaths, and the revision counter.

Every change bumps the revision in its own transaction, so each process's
match index knows when to rebuild.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pacifica.dispatcher.storage.database import write_transaction
from pacifica.dispatcher.storage.schema import Subscription, SubscriptionRevision
from pacifica.dispatcher.storage.statements import select_in, value_of
from pacifica.dispatcher.storage.values import utcnow


@dataclass(frozen=True)
class SubscriptionRow:
    """A user's subscription as stored (secrets included: mask before showing it)."""

    uuid: uuidlib.UUID
    name: str
    jsonpath: str
    user: str
    target_url: str
    version: str
    extensions: dict[str, Any]
    auth: dict[str, Any]
    secret: str | None
    disabled: datetime | None
    error: str | None
    failures: int
    created: datetime
    updated: datetime
    deleted: datetime | None

    @classmethod
    def from_record(cls, record: Subscription) -> SubscriptionRow:
        """The value of a peewee row."""
        return value_of(cls, record, extensions=record.extensions or {}, auth=record.auth or {})


def get_subscription(user: str, key: uuidlib.UUID) -> SubscriptionRow | None:
    """The user's live subscription with this id, or None."""
    record = Subscription.get_or_none(
        (Subscription.uuid == key) & (Subscription.user == user) & Subscription.deleted.is_null()
    )
    return None if record is None else SubscriptionRow.from_record(record)


def subscriptions_of(user: str) -> list[SubscriptionRow]:
    """The user's subscriptions that are not deleted (disabled ones included), oldest first."""
    query = Subscription.select().where(
        (Subscription.user == user) & Subscription.deleted.is_null()
    )
    ordered = query.order_by(Subscription.created, Subscription.uuid)
    return [SubscriptionRow.from_record(r) for r in ordered]


def insert_subscription(user: str, values: Mapping[str, Any]) -> SubscriptionRow:
    """Store a new subscription with these field values; return it."""
    with write_transaction():
        now, key = utcnow(), uuidlib.uuid4()
        Subscription.insert(uuid=key, user=user, created=now, updated=now, **values).execute()
        bump_revision()
    return SubscriptionRow.from_record(Subscription.get_by_id(key))


def update_subscription(key: uuidlib.UUID, values: Mapping[str, Any]) -> SubscriptionRow:
    """Change a subscription's fields; return it as stored."""
    with write_transaction():
        Subscription.update(**values, updated=utcnow()).where(Subscription.uuid == key).execute()
        bump_revision()
    return SubscriptionRow.from_record(Subscription.get_by_id(key))


def disable_subscription(key: uuidlib.UUID, reason: str) -> bool:
    """Disable an active subscription with the reason in ``error``; False if it was not active."""
    with write_transaction():
        now = utcnow()
        changed: int = (
            Subscription.update(disabled=now, error=reason, updated=now)
            .where(
                (Subscription.uuid == key)
                & Subscription.disabled.is_null()
                & Subscription.deleted.is_null()
            )
            .execute()
        )
        if changed:
            bump_revision()
    return changed == 1


def active_paths() -> list[tuple[str, str]]:
    """(id, JSONPath) of every subscription that is neither deleted nor disabled."""
    query = Subscription.select(Subscription.uuid, Subscription.jsonpath).where(
        Subscription.deleted.is_null() & Subscription.disabled.is_null()
    )
    return [(str(row.uuid), row.jsonpath) for row in query]


def revision() -> int:
    """The subscription revision counter (0 before the first change); workers read it per event."""
    rows = select_in(SubscriptionRevision, ["revision"], {}, "id", [1])
    return int(rows[0][0]) if rows else 0


def bump_revision() -> None:
    """Tell every process's matcher that subscriptions changed (call inside the change's transaction)."""
    SubscriptionRevision.update(revision=SubscriptionRevision.revision + 1).where(
        SubscriptionRevision.id == 1
    ).execute()
