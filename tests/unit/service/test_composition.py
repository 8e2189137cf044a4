"""The composition root's database checks: the embedded default upgrades itself, a server
database must be synced by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import SchemaMismatchError
from pacifica.dispatcher.service import open_checked_database
from pacifica.dispatcher.storage import (
    code_schema_version,
    open_database,
    schema_version,
    sync_schema,
)


def older_database(path: Path) -> None:
    """A database file that an earlier version left at schema 3."""
    database = open_database(f"sqlite:///{path}")
    sync_schema(database)
    database.execute_sql('UPDATE "dispatcher_schema" SET "version" = 3')
    database.close()


def test_an_older_embedded_database_is_upgraded_when_the_service_starts(tmp_path: Path) -> None:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    older_database(tmp_path / "dispatcher.sqlite3")
    database = open_checked_database(settings)
    assert schema_version(database) == code_schema_version()


def test_an_older_server_database_is_refused_with_what_to_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'server.sqlite3'}"
    older_database(tmp_path / "server.sqlite3")
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), "DATABASE_URL": url})
    with pytest.raises(SchemaMismatchError, match="db sync"):
        open_checked_database(settings)


def test_db_sync_leaves_an_older_database_with_the_indexes_of_a_new_one(tmp_path: Path) -> None:
    tables = ("dispatcher_event", "dispatcher_route_run")
    new = open_database(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    sync_schema(new)
    wanted = {t: {i.name for i in new.get_indexes(t)} for t in tables}
    new.close()
    old = open_database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    sync_schema(old)
    for name, table, column in (  # what versions up to 9 created, one write per event each
        ("eventrecord_status", "dispatcher_event", "status"),
        ("eventrecord_updated", "dispatcher_event", "updated"),
        ("routerun_event_id", "dispatcher_route_run", "event_id"),
    ):
        old.execute_sql(f'CREATE INDEX "{name}" ON "{table}" ("{column}")')
    old.execute_sql('UPDATE "dispatcher_schema" SET "version" = 9')
    assert [step.split(":")[0] for step in sync_schema(old)] == ["10", "11"]
    assert {t: {i.name for i in old.get_indexes(t)} for t in tables} == wanted
    old.close()
