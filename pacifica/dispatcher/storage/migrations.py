"""Schema versions: ordered migrations, ``sync_schema`` and ``check_schema``."""

from __future__ import annotations

from collections.abc import Callable

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from pacifica.dispatcher.errors import SchemaMismatchError
from pacifica.dispatcher.storage.schema import (
    Delivery,
    DeliveryAttempt,
    EventRecord,
    HostSlot,
    Lineage,
    Replay,
    ReplayRun,
    RouteRun,
    SchemaInfo,
    ServerSecret,
    Subscription,
    SubscriptionRevision,
    WorkerBeat,
)

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


@migration(4, "worker heartbeats; which worker holds an event or a delivery")
def _add_worker_heartbeats(database: peewee.Database) -> None:
    database.create_tables([WorkerBeat])
    migrator = SchemaMigrator.from_database(database)
    for model in (EventRecord, Delivery):  # a new database has them from migrations 1 and 2
        table = model._meta.table_name
        if "holder" not in {c.name for c in database.get_columns(table)}:
            migrate(migrator.add_column(table, "holder", model.holder))  # with its index


@migration(5, "per-host delivery slots (concurrent deliveries per target host)")
def _create_host_slots(database: peewee.Database) -> None:
    database.create_tables([HostSlot])


@migration(7, "what a route run reported (a consumer entry point's exit status and output)")
def _add_route_run_report(database: peewee.Database) -> None:
    table = RouteRun._meta.table_name
    if "report" not in {c.name for c in database.get_columns(table)}:
        migrator = SchemaMigrator.from_database(database)
        migrate(migrator.add_column(table, "report", RouteRun.report))


OPERATOR_INDEXES: tuple[tuple[type[peewee.Model], tuple[str, ...]], ...] = (
    (EventRecord, ("status", "created")),  # waiting count and the oldest waiting event
    (EventRecord, ("finished",)),  # latency over a window
    (EventRecord, ("event_id",)),  # the event page's search
    (EventRecord, ("transaction_id",)),
    (RouteRun, ("started", "route", "status")),  # route runs over a window, index only
    (RouteRun, ("route", "status", "finished")),  # each route's most recent failure
    (Delivery, ("subscription", "status")),  # deliveries by state, per subscription
    (Delivery, ("subscription", "updated")),  # a subscription's most recent error
)


@migration(8, "transaction ids of events; indexes for the operator page and /metrics")
def _add_operator_indexes(database: peewee.Database) -> None:
    database.create_tables([ServerSecret])
    table = EventRecord._meta.table_name
    migrator = SchemaMigrator.from_database(database)
    if "transaction_id" not in {c.name for c in database.get_columns(table)}:
        migrate(migrator.add_column(table, "transaction_id", EventRecord.transaction_id))
        backfill_transaction_ids(database)
    for model, columns in OPERATOR_INDEXES:
        name = f"{model._meta.table_name}_{'_'.join(columns)}_ops"
        if name not in {i.name for i in database.get_indexes(model._meta.table_name)}:
            fields = [model._meta.fields[c] for c in columns]
            database.execute(model.index(*fields, name=name, safe=False))


def backfill_transaction_ids(database: peewee.Database, batch: int = 1000) -> None:
    """Fill in ``transaction_id`` of the events stored before migration 8 (in batches)."""
    from pacifica.dispatcher.storage.values import transaction_id_of

    last = None
    while True:
        query = EventRecord.select(EventRecord.uuid, EventRecord.document)
        if last is not None:
            query = query.where(EventRecord.uuid > last)
        rows = list(query.order_by(EventRecord.uuid).limit(batch))
        if not rows:
            return
        for row in rows:
            found = transaction_id_of(row.document)
            if found is not None:
                EventRecord.update(transaction_id=found).where(
                    EventRecord.uuid == row.uuid
                ).execute()
        last = rows[-1].uuid


@migration(9, "replays (a delivery belongs to a replay or to none) and lineage")
def _add_replays_and_lineage(database: peewee.Database) -> None:
    database.create_tables([Replay, Lineage])
    table = Delivery._meta.table_name
    migrator = SchemaMigrator.from_database(database)
    if "replay" not in {c.name for c in database.get_columns(table)}:
        migrate(migrator.add_column(table, "replay", Delivery.replay))
    indexes = {i.name for i in database.get_indexes(table)}
    if "delivery_event_id_subscription_id" in indexes:  # one delivery per pair and replay now
        migrate(migrator.drop_index(table, "delivery_event_id_subscription_id"))
    # A new database has peewee's name for it; an upgraded one, the migrator's.
    if not indexes & {f"{p}delivery_event_id_subscription_id_replay" for p in ("", "dispatcher_")}:
        migrate(migrator.add_index(table, ("event_id", "subscription_id", "replay"), True))


# Indexes no query needs, each one more B-tree write whenever an event is stored or changes
# status: on a table of a million events those writes are what grows (BENCHMARKS.md).
UNUSED_INDEXES = (
    (EventRecord, "eventrecord_status"),  # (status, created) of migration 8 serves status
    (EventRecord, "eventrecord_updated"),  # nothing selects or orders events by updated
    (RouteRun, "routerun_event_id"),  # the unique (event, route) index serves event
)


@migration(10, "drop the event indexes no query uses (faster writes on large tables)")
def _drop_unused_indexes(database: peewee.Database) -> None:
    migrator = SchemaMigrator.from_database(database)
    for model, name in UNUSED_INDEXES:
        table = model._meta.table_name
        if name in {i.name for i in database.get_indexes(table)}:
            migrate(migrator.drop_index(table, name))


@migration(11, "route replays' schedule; replays' pacing after a publisher stopped")
def _add_replay_schedule(database: peewee.Database) -> None:
    database.create_tables([ReplayRun])
    table = Replay._meta.table_name
    have = {c.name for c in database.get_columns(table)}
    migrator = SchemaMigrator.from_database(database)
    for name in ("paced", "lag", "released"):  # a new database has them from migration 9
        if name not in have:  # (with the index of ``released``)
            migrate(migrator.add_column(table, name, Replay._meta.fields[name]))
    deliveries = Delivery._meta.table_name
    if REPLAY_SCHEDULE not in {i.name for i in database.get_indexes(deliveries)}:
        index = Delivery.index(
            Delivery.replay, Delivery.enqueued, Delivery.next_attempt, name=REPLAY_SCHEDULE
        )
        if isinstance(database, (peewee.SqliteDatabase, peewee.PostgresqlDatabase)):
            index = index.where(REPLAYED)  # partial: ordinary deliveries pay nothing
        database.execute(index.safe(False))


REPLAY_SCHEDULE = "delivery_replay_schedule"  # a replay's deliveries left to publish, in order
REPLAYED = peewee.SQL('"replay" <> 0')  # its condition, a literal (queries repeat it verbatim)


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
