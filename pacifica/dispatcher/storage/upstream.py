"""pacifica-notifications 0.5.2's tables, read to take over a site's subscriptions.

A site that switches points this service at the database its notifications
service used. ``import_notifications_subscriptions`` copies the rows of
upstream's ``eventmatch`` table into this service's subscriptions, keeping
their uuids, owners, JSONPaths, targets, auth, extensions and their disabled
and deleted state. A uuid already here is left alone, so running it again
changes nothing. Upstream's tables are only read.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

import peewee

from pacifica.dispatcher.storage.database import write_transaction
from pacifica.dispatcher.storage.schema import Subscription, database_proxy
from pacifica.dispatcher.storage.subscriptions import bump_revision

log = logging.getLogger(__name__)


class UpstreamEventMatch(peewee.Model):
    """pacifica-notifications 0.5.2's ``eventmatch`` table (a subscription), as it stores it."""

    uuid = peewee.UUIDField(primary_key=True)
    name = peewee.CharField()
    jsonpath = peewee.TextField()
    user = peewee.CharField()
    disabled = peewee.DateTimeField(null=True)
    error = peewee.TextField(null=True)
    target_url = peewee.TextField()
    version = peewee.CharField(null=True)
    extensions = peewee.TextField(null=True)
    auth = peewee.TextField(null=True)
    created = peewee.DateTimeField(null=True)
    updated = peewee.DateTimeField(null=True)
    deleted = peewee.DateTimeField(null=True)

    class Meta:
        database = database_proxy
        table_name = "eventmatch"


def _utc(value: Any) -> datetime | None:
    """Upstream stored naive local time (``datetime.now()``); this service stores UTC."""
    if not isinstance(value, datetime):
        return None
    return value.astimezone(timezone.utc)


def _json_object(text: Any, uuid: Any, field: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        log.warning("subscription %s: %s is not JSON; imported without it", uuid, field)
        return {}
    return value if isinstance(value, dict) else {}


def _values(row: UpstreamEventMatch) -> dict[str, Any]:
    created = _utc(row.created) or datetime.now(timezone.utc)
    return {
        "uuid": row.uuid,
        "name": (row.name or "")[:255],
        "jsonpath": row.jsonpath,
        "user": row.user,
        "target_url": row.target_url,
        "version": (row.version or "v0.1")[:16],
        "extensions": _json_object(row.extensions, row.uuid, "extensions"),
        "auth": _json_object(row.auth, row.uuid, "auth"),
        "disabled": _utc(row.disabled),
        "error": row.error,
        "created": created,
        "updated": _utc(row.updated) or created,
        "deleted": _utc(row.deleted),
    }


def import_notifications_subscriptions() -> int | None:
    """Copy upstream ``eventmatch`` subscriptions not yet here; how many were copied
    (None: the database has no such table)."""
    database = database_proxy.obj
    if not database.table_exists(UpstreamEventMatch._meta.table_name):
        return None
    with write_transaction():
        known = {row.uuid for row in Subscription.select(Subscription.uuid)}
        new = [_values(r) for r in UpstreamEventMatch.select() if r.uuid not in known]
        for values in new:
            Subscription.insert(**values).execute()
        if new:
            bump_revision()
    return len(new)
