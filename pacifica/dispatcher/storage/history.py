"""History queries: stored event documents to test a JSONPath on (typed rows out)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from pacifica.dispatcher.storage.schema import EventRecord


class EventDocument(NamedTuple):
    """A stored event as a JSONPath sees it: the document, and what identifies it."""

    uuid: uuidlib.UUID
    created: datetime
    source: str
    event_id: str
    event_type: str
    document: Any


_SELECTED = (
    EventRecord.uuid,
    EventRecord.created,
    EventRecord.source,
    EventRecord.event_id,
    EventRecord.event_type,
    EventRecord.document,
)


def event_documents(
    last: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: Sequence[uuidlib.UUID] = (),
) -> list[EventDocument]:
    """Live events, newest first: the ``ids`` given, or the ``last`` N created in [since, until)."""
    query = EventRecord.select(*_SELECTED).where(EventRecord.deleted.is_null())
    if ids:
        query = query.where(EventRecord.uuid.in_(list(ids)))
    if since is not None:
        query = query.where(EventRecord.created >= since)
    if until is not None:
        query = query.where(EventRecord.created < until)
    query = query.order_by(EventRecord.created.desc(), EventRecord.uuid.desc())
    if last is not None:
        query = query.limit(last)
    return [EventDocument(*row) for row in query.tuples()]  # type: ignore[misc]  # peewee: untyped
