"""Connecting to the database, and the transactions every writer uses."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect

from pacifica.dispatcher.errors import ConfigurationError
from pacifica.dispatcher.storage.schema import database_proxy


def open_database(url: str) -> peewee.Database:
    """Connect the models to the database at ``url`` (peewee URL syntax) and return it.

    SQLite files get WAL mode and a busy timeout so the web server and workers
    can share one file; their directory is created if missing.

    Raises:
        ConfigurationError: the URL's scheme is not one peewee knows.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = urlparse(url).path
        if path not in ("", "/:memory:"):
            Path(path[1:] if path.startswith("//") else path).parent.mkdir(
                parents=True, exist_ok=True
            )
        kwargs["pragmas"] = {"journal_mode": "wal", "busy_timeout": 30000, "synchronous": "normal"}
    try:
        database: peewee.Database = connect(url, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise ConfigurationError(f"DATABASE_URL: {exc}") from exc
    database_proxy.initialize(database)
    return database


def supports_returning(database: peewee.Database | peewee.DatabaseProxy) -> bool:
    """True when ``UPDATE … RETURNING`` works: PostgreSQL, and SQLite from 3.35."""
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    if isinstance(database, peewee.PostgresqlDatabase):
        return True
    if isinstance(database, peewee.SqliteDatabase):
        return sqlite3.sqlite_version_info >= (3, 35)
    return False


# Prepared statements for the hot paths (receiving and processing events): building
# a query with peewee's query builder costs more CPU than the database spends running
# it (BENCHMARKS.md). Table and column names come from the models; every value is a
# parameter converted by its field's ``db_value``, as peewee would.


def write_transaction() -> Any:
    """A transaction (or savepoint) for writes.

    On SQLite it begins with ``BEGIN IMMEDIATE``: a transaction that reads and
    then writes would otherwise fail at once with "database is locked" when
    another connection wrote in between, without waiting for the busy timeout.
    """
    database = database_proxy.obj
    if isinstance(database, peewee.SqliteDatabase) and not database.in_transaction():
        return database.atomic("IMMEDIATE")
    return database_proxy.atomic()


def forget_connection() -> None:
    """Drop this process's connection state without closing it (a forked child must not share its parent's socket)."""
    if database_proxy.obj is not None:
        database_proxy.obj._state.reset()
