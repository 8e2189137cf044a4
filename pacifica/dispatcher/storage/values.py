"""Values every layer shares: the statuses of events, route runs and deliveries, and UTC time.

Statuses are stored as integers and shown as the upstream strings. No database
code here: the service, the registry and the CLI speak these.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 text for JSON answers (None stays None)."""
    return None if value is None else value.isoformat()


def transaction_id_of(document: Any) -> str | None:
    """The Pacifica transaction an event document is about (its ``Transactions._id`` entry), if any.

    Pacifica Metadata's events list it in ``data`` (0.1 and 1.0 alike); at
    most 64 characters are kept, the column's width.
    """
    data = document.get("data") if isinstance(document, dict) else None
    for item in data if isinstance(data, list) else ():
        if isinstance(item, dict) and item.get("destinationTable") == "Transactions._id":
            value = item.get("value", item.get("_id"))
            return None if value is None or isinstance(value, (dict, list)) else str(value)[:64]
    return None


class EventStatus(enum.IntEnum):
    """Where an event is in its life; the value is the upstream HTTP-like code."""

    PROCESSING = 102
    SUCCEEDED = 200
    ACCEPTED = 202
    UNROUTED = 422
    FAILED = 500

    @property
    def http(self) -> str:
        """The upstream status string, e.g. ``"200 OK"``."""
        return _HTTP_STRINGS[self]

    @property
    def final(self) -> bool:
        """True once the event will not be processed again unless retried."""
        return self in (EventStatus.SUCCEEDED, EventStatus.UNROUTED, EventStatus.FAILED)


_HTTP_STRINGS = {
    EventStatus.PROCESSING: "102 Processing",
    EventStatus.SUCCEEDED: "200 OK",
    EventStatus.ACCEPTED: "202 Accepted",
    EventStatus.UNROUTED: "422 Unprocessable Entity",
    EventStatus.FAILED: "500 Internal Server Error",
}


class RunStatus(enum.IntEnum):
    """Outcome of one route for one event."""

    PROCESSING = 102
    SUCCEEDED = 200
    REPLAY = 202  # a route replay asked for it to run again: the next processing runs only these
    FAILED = 500


class DeliveryStatus(enum.IntEnum):
    """Where one (event, subscription) delivery is; PENDING waits for ``next_attempt``."""

    PENDING = 0
    DELIVERED = 200
    REJECTED = 403
    FAILED = 400
    DEAD = 410
    CANCELLED = 499

    @property
    def final(self) -> bool:
        """True once no further attempt is scheduled."""
        return self is not DeliveryStatus.PENDING
