"""History queries: stored event documents to test a JSONPath on (typed rows out), a page at
a time."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import peewee

from pacifica.dispatcher.storage.schema import EventRecord
from pacifica.dispatcher.storage.statements import chunks


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


PAGE = 1000  # stored events read at a time: a selection of millions never sits in memory


def event_documents(
    last: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: Sequence[uuidlib.UUID] = (),
    oldest_first: bool = False,
    page: int = PAGE,
) -> Iterator[EventDocument]:
    """Live events, newest first (or oldest first): the ``ids`` given, or the ``last`` N
    created in [since, until); read ``page`` at a time, each page after the last one's
    (created, uuid), so memory holds one page whatever the selection's size."""
    base = EventRecord.select(*_SELECTED).where(EventRecord.deleted.is_null())
    if since is not None:
        base = base.where(EventRecord.created >= since)
    if until is not None:
        base = base.where(EventRecord.created < until)
    if ids:
        for chunk in chunks(ids):
            yield from _ordered(base.where(EventRecord.uuid.in_(list(chunk))), oldest_first)
        return
    left = last
    after: tuple[datetime, uuidlib.UUID] | None = None
    while left is None or left > 0:
        query = base if after is None else base.where(_beyond(after, oldest_first))
        size = page if left is None else min(page, left)
        rows = list(_ordered(query, oldest_first, size))
        yield from rows
        if len(rows) < size:
            return
        after = (rows[-1].created, rows[-1].uuid)
        left = None if left is None else left - len(rows)


def _ordered(query: Any, oldest_first: bool, limit: int | None = None) -> Iterator[EventDocument]:
    created, key = EventRecord.created, EventRecord.uuid
    order = (created, key) if oldest_first else (created.desc(), key.desc())
    query = query.order_by(*order)
    if limit is not None:
        query = query.limit(limit)
    for row in query.tuples():
        yield EventDocument(*row)


def _beyond(after: tuple[datetime, uuidlib.UUID], oldest_first: bool) -> peewee.Expression:
    """Rows after ``after`` in the stored order (the keyset of the next page); the bare
    range on ``created`` comes first so that its index bounds the scan."""
    created, key = after
    if oldest_first:
        return (EventRecord.created >= created) & (
            (EventRecord.created > created) | (EventRecord.uuid > key)
        )
    return (EventRecord.created <= created) & (
        (EventRecord.created < created) | (EventRecord.uuid < key)
    )
