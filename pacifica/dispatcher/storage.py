"""Durable state in a peewee database: events, route runs, schema versions.

Models are bound to a ``DatabaseProxy``; ``open_database(url)`` connects it.
The schema carries a version number; ``sync_schema`` applies the ordered
migrations and ``check_schema`` tells whether the database matches the code.
"""

from __future__ import annotations

import enum
import json
import logging
import sqlite3
import uuid as uuidlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect
from playhouse.migrate import SchemaMigrator, migrate

from pacifica.dispatcher.errors import ConfigurationError, SchemaMismatchError

database_proxy = peewee.DatabaseProxy()
_peewee_log = logging.getLogger("peewee")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


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
    FAILED = 500


class UTCDateTimeField(peewee.DateTimeField):
    """Stores naive UTC, returns aware UTC datetimes."""

    def db_value(self, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class JSONTextField(peewee.TextField):
    """A JSON document stored as text (portable across SQLite, PostgreSQL, MySQL)."""

    def db_value(self, value: Any) -> Any:
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    """Binds every model to the shared database proxy; ``updated`` changes on every save."""

    class Meta:
        database = database_proxy

    def save(self, *args: Any, **kwargs: Any) -> Any:
        if "updated" in self._meta.fields:
            self.updated = utcnow()
        return super().save(*args, **kwargs)


class SchemaInfo(BaseModel):
    """One row: the schema version this database is at."""

    version = peewee.IntegerField()

    class Meta:
        table_name = "dispatcher_schema"


class EventRecord(BaseModel):
    """A received event: its attributes, the document routes match, and its status."""

    uuid = peewee.UUIDField(primary_key=True, default=uuidlib.uuid4)
    event_id = peewee.CharField(max_length=255)
    source = peewee.CharField(max_length=1024)
    event_type = peewee.CharField(max_length=255, index=True)
    spec_version = peewee.CharField(max_length=16)
    event_time = UTCDateTimeField(null=True)
    content_type = peewee.CharField(max_length=255, null=True)
    document = JSONTextField()
    status = peewee.IntegerField(default=int(EventStatus.ACCEPTED), index=True)
    attempts = peewee.IntegerField(default=0)
    enqueued = UTCDateTimeField(null=True, index=True)
    started = UTCDateTimeField(null=True)
    finished = UTCDateTimeField(null=True)
    created = UTCDateTimeField(default=utcnow, index=True)
    updated = UTCDateTimeField(default=utcnow, index=True)
    deleted = UTCDateTimeField(null=True)
    # The broker message that holds the event while it is '102 Processing'.
    claimed_by = peewee.CharField(max_length=255, null=True)

    class Meta:
        table_name = "dispatcher_event"
        indexes = ((("source", "event_id"), True),)

    @property
    def event_status(self) -> EventStatus:
        """``status`` as an ``EventStatus``."""
        return EventStatus(self.status)


class RouteRun(BaseModel):
    """One route run for one event, with the handler's exception if it raised."""

    id = peewee.AutoField()
    event = peewee.ForeignKeyField(EventRecord, backref="runs", on_delete="CASCADE")
    route = peewee.CharField(max_length=255)
    handler = peewee.CharField(max_length=512)
    status = peewee.IntegerField(default=int(RunStatus.PROCESSING))
    exc_type = peewee.CharField(max_length=255, null=True)
    exc_message = peewee.TextField(null=True)
    exc_traceback = peewee.TextField(null=True)
    attempts = peewee.IntegerField(default=0)
    started = UTCDateTimeField(default=utcnow)
    finished = UTCDateTimeField(null=True)
    created = UTCDateTimeField(default=utcnow)
    updated = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "dispatcher_route_run"
        indexes = ((("event", "route"), True),)


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


class Subscription(BaseModel):
    """A user's subscription: a JSONPath and the URL matching events are sent to."""

    uuid = peewee.UUIDField(primary_key=True, default=uuidlib.uuid4)
    name = peewee.CharField(max_length=255, index=True)
    jsonpath = peewee.TextField()
    user = peewee.CharField(max_length=255, index=True)
    target_url = peewee.TextField()
    version = peewee.CharField(max_length=16, default="v0.1")
    extensions = JSONTextField(default=dict)
    auth = JSONTextField(default=dict)
    secret = peewee.TextField(null=True)
    disabled = UTCDateTimeField(null=True, index=True)
    error = peewee.TextField(null=True)
    failures = peewee.IntegerField(default=0)
    created = UTCDateTimeField(default=utcnow, index=True)
    updated = UTCDateTimeField(default=utcnow, index=True)
    deleted = UTCDateTimeField(null=True, index=True)

    class Meta:
        table_name = "dispatcher_subscription"


class SubscriptionRevision(BaseModel):
    """One row whose counter is bumped with every subscription change (cache invalidation)."""

    id = peewee.IntegerField(primary_key=True)
    revision = peewee.BigIntegerField(default=0)

    class Meta:
        table_name = "dispatcher_subscription_revision"


class Delivery(BaseModel):
    """One matched (event, subscription) pair and where its delivery stands."""

    id = peewee.AutoField()
    uuid = peewee.UUIDField(default=uuidlib.uuid4, unique=True)
    event = peewee.ForeignKeyField(EventRecord, backref="deliveries", on_delete="CASCADE")
    subscription = peewee.ForeignKeyField(Subscription, backref="deliveries", on_delete="CASCADE")
    status = peewee.IntegerField(default=int(DeliveryStatus.PENDING), index=True)
    attempts = peewee.IntegerField(default=0)
    next_attempt = UTCDateTimeField(null=True, index=True)
    lease_until = UTCDateTimeField(null=True)
    enqueued = UTCDateTimeField(null=True)
    policy_status = peewee.IntegerField(null=True)
    policy_body = peewee.TextField(null=True)
    target_status = peewee.IntegerField(null=True)
    target_body = peewee.TextField(null=True)
    error = peewee.TextField(null=True)
    budget_start = UTCDateTimeField(default=utcnow)
    finished = UTCDateTimeField(null=True)
    created = UTCDateTimeField(default=utcnow, index=True)
    updated = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "dispatcher_delivery"
        indexes = ((("event", "subscription"), True),)

    @property
    def delivery_status(self) -> DeliveryStatus:
        """``status`` as a ``DeliveryStatus``."""
        return DeliveryStatus(self.status)


class DeliveryAttempt(BaseModel):
    """One HTTP request made for a delivery: the policy check or the POST to the target."""

    id = peewee.AutoField()
    delivery = peewee.ForeignKeyField(Delivery, backref="attempt_log", on_delete="CASCADE")
    number = peewee.IntegerField()
    kind = peewee.CharField(max_length=16)
    status_code = peewee.IntegerField(null=True)
    response = peewee.TextField(null=True)
    error = peewee.TextField(null=True)
    duration = peewee.FloatField()
    created = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "dispatcher_delivery_attempt"


IntegrityError = peewee.IntegrityError


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


def supports_returning(database: peewee.Database) -> bool:
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


def _bound(model: type[peewee.Model]) -> peewee.Database:
    database = model._meta.database
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    return cast(peewee.Database, database)


def _quote(database: peewee.Database, name: str) -> str:
    return f"{database.quote[0]}{name}{database.quote[1]}"


def _in(database: peewee.Database, column: str, count: int) -> str:
    return f"{_quote(database, column)} IN ({', '.join([database.param] * count)})"


def subscription_revision() -> int:
    """The subscription revision counter (0 before the first change); workers read it per event."""
    rows = select_in(SubscriptionRevision, ["revision"], {}, "id", [1])
    return int(rows[0][0]) if rows else 0


def upsert_route_runs(rows: list[dict[str, Any]]) -> None:
    """Insert route runs; a run already recorded for (event, route) takes the new result.

    On conflict the row keeps its id and creation time and counts one more attempt.
    """
    if not rows:
        return
    fields = [
        "handler",
        "status",
        "exc_type",
        "exc_message",
        "exc_traceback",
        "started",
        "finished",
        "updated",
    ]
    update: dict[Any, Any] = {getattr(RouteRun, f): getattr(peewee.EXCLUDED, f) for f in fields}
    update[RouteRun.attempts] = RouteRun.attempts + 1
    database = database_proxy.obj
    target = (
        None if isinstance(database, peewee.MySQLDatabase) else [RouteRun.event, RouteRun.route]
    )
    RouteRun.insert_many(rows).on_conflict(conflict_target=target, update=update).execute()


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


# --- schema versions -------------------------------------------------------------------------

Migration = Callable[[peewee.Database], None]
MIGRATIONS: list[tuple[int, str, Migration]] = []


def migration(version: int, description: str) -> Callable[[Migration], Migration]:
    """Register a schema migration; versions must be added in increasing order."""

    def register(func: Migration) -> Migration:
        if MIGRATIONS and MIGRATIONS[-1][0] >= version:
            raise RuntimeError(f"migration {version} registered out of order")
        MIGRATIONS.append((version, description, func))
        return func

    return register


@migration(1, "events and route runs")
def _create_event_tables(database: peewee.Database) -> None:
    database.create_tables([EventRecord, RouteRun])


@migration(2, "subscriptions, deliveries and delivery attempts")
def _create_subscription_tables(database: peewee.Database) -> None:
    database.create_tables([Subscription, SubscriptionRevision, Delivery, DeliveryAttempt])
    SubscriptionRevision.insert(id=1, revision=0).on_conflict_ignore().execute()


@migration(3, "which message holds an event in processing")
def _add_event_claimant(database: peewee.Database) -> None:
    table = EventRecord._meta.table_name
    if "claimed_by" not in {c.name for c in database.get_columns(table)}:
        migrator = SchemaMigrator.from_database(database)
        migrate(migrator.add_column(table, "claimed_by", EventRecord.claimed_by))


def code_schema_version() -> int:
    """The schema version this code expects."""
    return MIGRATIONS[-1][0]


def schema_version(database: peewee.Database) -> int:
    """The schema version stored in the database, 0 for an empty database."""
    if not database.table_exists(SchemaInfo._meta.table_name):
        return 0
    row = SchemaInfo.select().first()
    return int(row.version) if row else 0


def sync_schema(database: peewee.Database) -> list[str]:
    """Apply every migration the database has not had; return their descriptions.

    Raises:
        SchemaMismatchError: the database is newer than this code.
    """
    current = schema_version(database)
    if current > code_schema_version():
        raise SchemaMismatchError(
            f"database schema {current} is newer than this code's {code_schema_version()}; "
            "upgrade pacifica-dispatcher"
        )
    applied = []
    with database.atomic():
        database.create_tables([SchemaInfo])
        for version, description, func in MIGRATIONS:
            if version > current:
                func(database)
                applied.append(f"{version}: {description}")
        SchemaInfo.delete().execute()
        SchemaInfo.create(version=code_schema_version())
    return applied


def check_schema(database: peewee.Database) -> None:
    """Return quietly when the database schema is the code's.

    Raises:
        SchemaMismatchError: it is not; the message says what to run.
    """
    current, expected = schema_version(database), code_schema_version()
    if current != expected:
        raise SchemaMismatchError(
            f"database schema is version {current}, this code needs {expected}: "
            "run `pacifica-dispatcher db sync`"
        )
