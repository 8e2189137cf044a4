"""Durable state: the only package that talks to the database (peewee lives here only).

``schema`` (tables), ``migrations`` (schema versions), ``database``
(connecting, transactions), ``statements`` (prepared hot-path SQL) and the
query modules ``events``, ``deliveries`` and ``subscriptions``, whose
functions take and return typed values (``values`` holds the statuses);
``upstream`` reads pacifica-notifications 0.5.2's subscriptions to import them.
"""

from __future__ import annotations

from pacifica.dispatcher.storage import deliveries, events, subscriptions, upstream, workers
from pacifica.dispatcher.storage.database import (
    available,
    checkpoint,
    connect_patiently,
    drop_connection,
    forget_connection,
    is_unavailable,
    open_database,
    prompt_write_transaction,
    supports_returning,
    url_of,
    write_transaction,
)
from pacifica.dispatcher.storage.migrations import (
    check_schema,
    code_schema_version,
    schema_version,
    sync_schema,
)
from pacifica.dispatcher.storage.values import (
    DeliveryStatus,
    EventStatus,
    RunStatus,
    iso,
    utcnow,
)

__all__ = [
    "DeliveryStatus",
    "EventStatus",
    "RunStatus",
    "available",
    "check_schema",
    "checkpoint",
    "code_schema_version",
    "connect_patiently",
    "deliveries",
    "drop_connection",
    "events",
    "forget_connection",
    "is_unavailable",
    "iso",
    "open_database",
    "prompt_write_transaction",
    "schema_version",
    "subscriptions",
    "supports_returning",
    "sync_schema",
    "upstream",
    "url_of",
    "utcnow",
    "workers",
    "write_transaction",
]
