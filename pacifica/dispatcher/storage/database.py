"""Connecting to the database, surviving its restarts, and the transactions every writer uses.

A lost or refused connection (a PostgreSQL restart or failover, a dropped
socket, SQLite staying busy) surfaces as ``StorageUnavailableError`` from
``available()``, and this thread's dead connection is dropped on the way, so
the next query connects afresh: callers answer 503 or retry later; nothing
needs a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

import peewee
from playhouse.db_url import connect

from pacifica.dispatcher.errors import ConfigurationError, StorageUnavailableError
from pacifica.dispatcher.storage.schema import database_proxy

log = logging.getLogger(__name__)
# What drivers raise when the server is down, restarting, gone away, or (SQLite) busy.
CONNECTION_ERRORS = (peewee.OperationalError, peewee.InterfaceError)
SQLITE_BUSY_MS = 30000  # how long a SQLite statement waits for another connection's lock
LOCK_POLL = 0.0005  # seconds between tries of ``prompt_write_transaction``


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
        kwargs["pragmas"] = {
            "journal_mode": "wal",
            "busy_timeout": SQLITE_BUSY_MS,
            "synchronous": "normal",
        }
    try:
        database: peewee.Database = connect(url, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise ConfigurationError(f"DATABASE_URL: {exc}") from exc
    database_proxy.initialize(database)
    return database


def url_of(database: Any) -> str | None:
    """The peewee URL of a database object a caller built (upstream projects pass one).

    An in-memory SQLite database gives None: it cannot be shared by the
    receiver and the workers, so the caller falls back to the embedded default.

    Raises:
        ConfigurationError: ``database`` is not a SQLite, PostgreSQL or MySQL database.
    """
    if isinstance(database, peewee.SqliteDatabase):
        name = database.database
        return None if name in ("", ":memory:") else f"sqlite:///{os.path.abspath(name)}"
    schemes = ((peewee.PostgresqlDatabase, "postgresql"), (peewee.MySQLDatabase, "mysql"))
    scheme = next((s for kind, s in schemes if isinstance(database, kind)), None)
    if scheme is None:
        raise ConfigurationError(f"cannot use a {type(database).__name__} as the database")
    params = dict(database.connect_params)
    user, password = params.pop("user", None), params.pop("password", params.pop("passwd", None))
    host, port = params.pop("host", None) or "", params.pop("port", None)
    # playhouse.db_url does not unquote, so neither side quotes.
    login = (user or "") + (f":{password}" if password else "")
    where = f"{login}@" * bool(login) + host + (f":{port}" if port else "")
    query = f"?{urlencode(params)}" if params else ""
    return f"{scheme}://{where}/{database.database or ''}{query}"


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


@contextlib.contextmanager
def prompt_write_transaction() -> Iterator[None]:
    """``write_transaction`` taking SQLite's write lock within a millisecond of its release.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, … 100 ms between
    tries, so a writer that finds the lock held by a worker kept waiting up to
    tens of milliseconds after it was free: the receiver's group commit's p99
    wait (BENCHMARKS.md, issue 17). This tries every ``LOCK_POLL`` seconds
    instead, within the same ``SQLITE_BUSY_MS``; other databases and nested
    calls get ``write_transaction``.

    Raises:
        peewee.OperationalError: the lock stayed taken for ``SQLITE_BUSY_MS``.
    """
    database = database_proxy.obj
    if not isinstance(database, peewee.SqliteDatabase) or database.in_transaction():
        with write_transaction():
            yield
        return
    with contextlib.ExitStack() as stack:
        _take_write_lock(database, stack)
        yield


def _take_write_lock(database: peewee.SqliteDatabase, stack: contextlib.ExitStack) -> None:
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    database.execute_sql("PRAGMA busy_timeout = 0")  # answer "locked" at once; we retry
    try:
        while True:
            try:
                stack.enter_context(database.atomic("IMMEDIATE"))
                return
            except peewee.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(LOCK_POLL)
    finally:
        database.execute_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")


def checkpoint() -> None:
    """Copy SQLite's write-ahead log into the database file now, without waiting for anyone.

    Left to SQLite, the commit that grows the log past 1,000 pages copies it
    and syncs the file, and the event whose receive, claim or outcome made
    that commit waits ~20 ms on it (one in a few dozen events at an idle
    pace). The workers' housekeeping calls this every heartbeat, so idle and
    lightly loaded services never checkpoint on an event's path; a no-op on
    other databases.
    """
    database = database_proxy.obj
    if isinstance(database, peewee.SqliteDatabase):
        database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")


def forget_connection() -> None:
    """Drop this process's connection state without closing it (a forked child must not share its parent's socket)."""
    if database_proxy.obj is not None:
        database_proxy.obj._state.reset()


def is_unavailable(error: BaseException) -> bool:
    """True when ``error`` is the database being unreachable, not the request being wrong."""
    return isinstance(error, (*CONNECTION_ERRORS, StorageUnavailableError))


def drop_connection() -> None:
    """Forget this thread's connection (closing it if it still can be): the next query reconnects."""
    database = database_proxy.obj
    if database is None:
        return
    connection = database._state.conn
    database._state.reset()
    if connection is not None:
        with contextlib.suppress(Exception):  # it is already broken; closing is a courtesy
            connection.close()


@contextlib.contextmanager
def available() -> Iterator[None]:
    """Turn a lost or refused connection into ``StorageUnavailableError``, dropping it.

    Raises:
        StorageUnavailableError: the database could not be reached or lost the connection.
    """
    try:
        yield
    except CONNECTION_ERRORS as exc:
        drop_connection()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageUnavailableError(f"the database is unavailable: {reason}") from exc


def connect_patiently(database: peewee.Database, attempts: int, wait: float) -> None:
    """Connect, trying ``attempts`` times ``wait`` seconds apart (a database still starting).

    Raises:
        StorageUnavailableError: no attempt connected.
    """
    for attempt in range(1, attempts + 1):
        try:
            with available():
                database.connect(reuse_if_open=True)
            return
        except StorageUnavailableError as exc:
            if attempt == attempts:
                raise StorageUnavailableError(
                    f"{exc} (after {attempts} attempt(s) {wait:g} s apart)"
                ) from exc.__cause__
            log.warning("%s; trying again in %g s (%d/%d)", exc, wait, attempt, attempts)
            time.sleep(wait)  # the retry interval of DATABASE_CONNECT_WAIT
