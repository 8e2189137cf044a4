"""Stored documents are read a page at a time, in the stored order, whatever the page size."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import peewee

from pacifica.dispatcher.storage import write_transaction
from pacifica.dispatcher.storage.events import NewEvent, insert_events
from pacifica.dispatcher.storage.history import event_documents

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def store(count: int) -> None:
    """``count`` events, three to each second of ``created`` (ties the pages must not skip)."""
    rows = [
        NewEvent(
            uuid.uuid4(),
            f"p{n}",
            "/s",
            "t",
            "1.0",
            None,
            None,
            {"n": n},
            START + timedelta(seconds=n // 3),
        )
        for n in range(count)
    ]
    with write_transaction():
        insert_events(rows)


def test_pages_of_any_size_give_every_event_once_in_the_stored_order(
    sqlite_db: peewee.Database,
) -> None:
    store(20)
    whole = [d.uuid for d in event_documents(page=1000)]
    assert len(whole) == 20
    for size in (1, 2, 3, 7):
        assert [d.uuid for d in event_documents(page=size)] == whole
        oldest = [d.uuid for d in event_documents(oldest_first=True, page=size)]
        assert oldest == whole[::-1]
    assert [d.uuid for d in event_documents(last=8, page=3)] == whole[:8]
    since, until = START + timedelta(seconds=2), START + timedelta(seconds=5)
    ranged = list(event_documents(since=since, until=until, oldest_first=True, page=2))
    assert sorted(d.document["n"] for d in ranged) == list(range(6, 15))
    assert [d.created for d in ranged] == sorted(d.created for d in ranged)
