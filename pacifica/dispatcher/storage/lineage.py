"""Lineage queries: which transaction a handler made from which (typed rows out)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pacifica.dispatcher.storage.schema import Lineage
from pacifica.dispatcher.storage.values import utcnow


@dataclass(frozen=True)
class LineageRow:
    """One upload: the new transaction, what it was made from, by which route and handler."""

    transaction: int
    source_transaction: int | None
    event: uuidlib.UUID | None
    route: str | None
    handler: str | None
    versions: dict[str, str]
    inputs: list[dict[str, Any]]
    created: datetime


def insert_lineage(row: LineageRow) -> None:
    """Record one upload's lineage."""
    Lineage.insert(
        transaction=row.transaction,
        source_transaction=row.source_transaction,
        event=row.event,
        route=row.route,
        handler=row.handler,
        versions=row.versions,
        inputs=row.inputs,
        created=row.created or utcnow(),
    ).execute()


def _rows(query: Iterable[Any]) -> list[LineageRow]:
    return [
        LineageRow(
            r.transaction,
            r.source_transaction,
            r.event,
            r.route,
            r.handler,
            r.versions or {},
            r.inputs or [],
            r.created,
        )
        for r in query
    ]


def made_as(transaction: int) -> list[LineageRow]:
    """The uploads that produced ``transaction`` (one, unless it was recorded twice)."""
    return _rows(Lineage.select().where(Lineage.transaction == transaction).order_by(Lineage.id))


def made_from(transactions: Iterable[int]) -> list[LineageRow]:
    """The uploads made from any of ``transactions``."""
    keys = list(transactions)
    if not keys:
        return []
    query = Lineage.select().where(Lineage.source_transaction.in_(keys)).order_by(Lineage.id)
    return _rows(query)
