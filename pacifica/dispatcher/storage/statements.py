"""Prepared statements for the hot paths (receiving and processing events).

Building a query with peewee's query builder costs more CPU than the database
spends running it (BENCHMARKS.md). Table and column names come from the
models; every value is a parameter converted by its field's ``db_value``, as
peewee would.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar, cast

import peewee

_peewee_log = logging.getLogger("peewee")


def insert_rows(model: type[peewee.Model], rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows (all with the same keys) with one prepared statement and ``executemany``.

    Fields left out take their defaults. Call it inside a transaction.
    """
    if not rows:
        return
    database = _bound(model)
    names = tuple(rows[0])
    fields = [model._meta.fields[name] for name in names]
    defaulted = [
        f for f in model._meta.sorted_fields if f.name not in names and f.default is not None
    ]
    columns = ", ".join(_quote(database, f.column_name) for f in fields + defaulted)
    marks = ", ".join([database.param] * (len(fields) + len(defaulted)))
    table = _quote(database, model._meta.table_name)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 (names from models)
    values = [
        tuple(f.db_value(row[n]) for f, n in zip(fields, names, strict=True))
        + tuple(f.db_value(f.default() if callable(f.default) else f.default) for f in defaulted)
        for row in rows
    ]
    if _peewee_log.isEnabledFor(logging.DEBUG):  # peewee's SQL log shows every statement
        _peewee_log.debug((sql, values))
    with peewee.__exception_wrapper__:  # type: ignore[attr-defined]  # driver errors → peewee's
        database.cursor().executemany(sql, values)


def select_in(
    model: type[peewee.Model],
    columns: Sequence[str],
    equal: dict[str, Any],
    field: str,
    keys: Sequence[Any],
) -> list[tuple[Any, ...]]:
    """``SELECT columns WHERE <each equal> AND field IN keys``, values converted both ways."""
    if not keys:
        return []
    database = _bound(model)
    meta = model._meta
    selected = [meta.fields[c] for c in columns]
    where = [f"{_quote(database, meta.fields[n].column_name)} = {database.param}" for n in equal]
    where.append(_in(database, meta.fields[field].column_name, len(keys)))
    names = ", ".join(_quote(database, f.column_name) for f in selected)
    table = _quote(database, meta.table_name)
    sql = f"SELECT {names} FROM {table} WHERE {' AND '.join(where)}"  # noqa: S608 (as above)
    params = [meta.fields[n].db_value(v) for n, v in equal.items()]
    params += [meta.fields[field].db_value(k) for k in keys]
    rows = database.execute_sql(sql, params).fetchall()
    return [tuple(f.python_value(v) for f, v in zip(selected, row, strict=True)) for row in rows]


def update_in(
    model: type[peewee.Model], changes: dict[str, Any], field: str, keys: Sequence[Any]
) -> None:
    """``UPDATE SET changes WHERE field IN keys``, values converted by their fields."""
    if not keys:
        return
    database = _bound(model)
    meta = model._meta
    assignments = ", ".join(
        f"{_quote(database, meta.fields[n].column_name)} = {database.param}" for n in changes
    )
    where = _in(database, meta.fields[field].column_name, len(keys))
    table = _quote(database, meta.table_name)
    sql = f"UPDATE {table} SET {assignments} WHERE {where}"  # noqa: S608 (names from models)
    params = [meta.fields[n].db_value(v) for n, v in changes.items()]
    params += [meta.fields[field].db_value(k) for k in keys]
    database.execute_sql(sql, params)


def columns_of(model: type[peewee.Model]) -> tuple[str, dict[str, str]]:
    """The model's quoted table name, and each field's quoted column name by field name."""
    database = _bound(model)
    columns = {name: _quote(database, f.column_name) for name, f in model._meta.fields.items()}
    return _quote(database, model._meta.table_name), columns


def placeholders(model: type[peewee.Model], count: int) -> str:
    """``count`` parameter marks of the model's database, comma-separated."""
    return ", ".join([_bound(model).param] * count)


def _bound(model: type[peewee.Model]) -> peewee.Database:
    database = model._meta.database
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    return cast(peewee.Database, database)


def _quote(database: peewee.Database, name: str) -> str:
    return f"{database.quote[0]}{name}{database.quote[1]}"


def _in(database: peewee.Database, column: str, count: int) -> str:
    return f"{_quote(database, column)} IN ({', '.join([database.param] * count)})"


T = TypeVar("T")
SWEEP_BATCH = 500  # rows one sweep claims at a time


def chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``: statements stay under every driver's parameter limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def claim_unsent(
    model: type[peewee.Model], key: str, candidates: Sequence[tuple[Any, Any]], now: Any
) -> list[Any]:
    """Claim outbox rows for sending: set ``enqueued`` to ``now`` where it is still what was read.

    ``candidates`` are (key, enqueued as read) pairs. A row another sweeper
    claimed in between no longer matches, so two sweepers never take one.
    """
    claimed = []
    key_field, enqueued = model._meta.fields[key], model._meta.fields["enqueued"]
    for value, seen in candidates:
        condition = enqueued.is_null() if seen is None else enqueued == seen
        changes = {enqueued: now}
        if "updated" in model._meta.fields:
            changes[model._meta.fields["updated"]] = now
        query = model.update(changes).where((key_field == value) & condition)
        if query.execute() == 1:
            claimed.append(value)
    return claimed


def value_of(cls: type[T], record: peewee.Model, **converted: Any) -> T:
    """A typed row (a dataclass) from a peewee model instance: fields read by name, some converted."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    return cls(**{n: converted[n] if n in converted else getattr(record, n) for n in names})


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
