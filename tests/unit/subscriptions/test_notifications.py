"""The upstream-compatible admin commands against a SQLite database."""

from __future__ import annotations

import socket
import sqlite3
import uuid as uuidlib
from pathlib import Path

import pytest

from pacifica.dispatcher import cli
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage.schema import Delivery, EventRecord, Subscription
from pacifica.dispatcher.subscriptions import add_subscription_route, notifications, registry
from pacifica.dispatcher.testing import event_from_dict
from tests.conftest import LoadJson


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'compat.sqlite3'}"
    for name in ("DATABASE_URL", "PEEWEE_URL", "BROKER_URL", "NOTIFICATIONS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPATCHER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NOTIFICATIONS_CONFIG", str(tmp_path / "missing.ini"))
    monkeypatch.setenv("DATABASE_URL", url)
    return url


def test_dbchk_fails_before_dbsync_and_passes_after(env: str) -> None:
    assert notifications.cmd(["dbchk"]) == 255
    assert notifications.cmd(["dbsync"]) == 0
    assert notifications.cmd(["dbchk", "--equal"]) == 0


def test_upstream_config_ini_supplies_the_database_and_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("POLICY_URL", raising=False)
    ini = tmp_path / "config.ini"
    ini.write_text(
        f"[notifications]\npolicy_url = http://127.0.0.1:8181\n"
        f"[database]\npeewee_url = sqliteext:///{tmp_path / 'up.sqlite3'}\n"
    )
    settings = notifications.upstream_settings(str(ini))
    assert settings.policy_url == "http://127.0.0.1:8181"
    assert settings.database_url == f"sqlite:///{tmp_path / 'up.sqlite3'}"


def test_eventget_prints_events_and_their_matches_then_eventpurge_removes_them(
    env: str, capsys: pytest.CaptureFixture[str], load_json: LoadJson
) -> None:
    assert notifications.cmd(["dbsync"]) == 0
    from pacifica.dispatcher.storage import open_database

    open_database(env)
    created = registry.create("u", {"name": "n", "jsonpath": "$", "target_url": "http://e.org"})
    router = Router()
    add_subscription_route(router)
    [accepted] = dispatch.accept([event_from_dict(load_json("notifications_events.json"))])
    dispatch.process(accepted.uuid, router)
    assert notifications.cmd(["eventget", accepted.uuid]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Event - {accepted.uuid}\n")
    assert f"    ELM {created['uuid']} (" in out
    assert "policy None target None" in out
    assert notifications.cmd(["eventpurge", "--older-than-date", "2999-01-01 00:00:00"]) == 0
    assert (EventRecord.select().count(), Delivery.select().count()) == (0, 0)
    capsys.readouterr()
    assert notifications.cmd(["eventget", accepted.uuid]) == 0  # gone: nothing shown, as upstream
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("command", ["eventget", "eventpurge", "eventretry"])
def test_event_commands_on_a_uuid_that_is_not_there_succeed_as_upstream(
    env: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert notifications.cmd(["dbsync"]) == 0
    capsys.readouterr()

    assert notifications.cmd([command, str(uuidlib.uuid4())]) == 0
    assert capsys.readouterr().out == ""
    assert notifications.cmd([command, "not-a-uuid"]) == 1  # upstream: ValueError from peewee


def test_an_error_exits_1_as_upstream_raised_and_dbchk_mismatch_255(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert notifications.cmd(["dbchk", "--equal"]) == 255
    assert notifications.cmd(["dbsync"]) == 0
    dates = ["--start-date", "2020-01-02 00:00:00", "--end-date", "2020-01-01 00:00:00"]

    assert notifications.cmd(["eventget", *dates]) == 1
    assert "start date is after end date" in capsys.readouterr().err


def test_an_unreachable_database_is_retried_then_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens
    monkeypatch.setenv("NOTIFICATIONS_CONFIG", str(tmp_path / "missing.ini"))
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody@127.0.0.1:{port}/none")
    monkeypatch.setenv("DATABASE_CONNECT_ATTEMPTS", "3")
    monkeypatch.setenv("DATABASE_CONNECT_WAIT", "0.01")

    for command in (["dbsync"], ["dbchk"], ["eventget"]):
        assert notifications.cmd(command) == 1
        err = capsys.readouterr().err
        assert "the database is unavailable" in err
        assert "after 3 attempt(s) 0.01 s apart" in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_connect_attempts_come_from_the_upstream_config_ini(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATABASE_CONNECT_ATTEMPTS", "DATABASE_CONNECT_WAIT"):
        monkeypatch.delenv(name, raising=False)
    ini = tmp_path / "config.ini"
    ini.write_text("[database]\nconnect_attempts = 4\nconnect_wait = 2\n")

    settings = notifications.upstream_settings(str(ini))

    assert (settings.database_connect_attempts, settings.database_connect_wait) == (4, 2.0)


# pacifica-notifications 0.5.2's table as peewee creates it on SQLite (uuids stored as 32 hex digits).
UPSTREAM_EVENTMATCH = """CREATE TABLE "eventmatch" ("uuid" TEXT NOT NULL PRIMARY KEY,
 "name" VARCHAR(255) NOT NULL, "jsonpath" TEXT NOT NULL, "user" VARCHAR(255) NOT NULL,
 "disabled" DATETIME, "error" TEXT, "target_url" TEXT NOT NULL, "version" VARCHAR(255) NOT NULL,
 "extensions" TEXT NOT NULL, "auth" TEXT, "created" DATETIME NOT NULL, "updated" DATETIME NOT NULL,
 "deleted" DATETIME)"""


def test_dbsync_imports_upstream_subscriptions_once_keeping_their_uuids(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live, disabled, deleted = uuidlib.uuid4(), uuidlib.uuid4(), uuidlib.uuid4()
    auth = '{"type": "basic", "basic": {"username": "me", "password": "pw"}}'
    rows = [
        (live, "live", "{}", auth, None, None, None),
        (disabled, "off", '{"site": "emsl"}', None, "2020-05-01 10:00:00", "policy 500", None),
        (deleted, "gone", "{}", "{}", None, None, "2020-05-02 10:00:00"),
    ]
    with sqlite3.connect(tmp_path / "compat.sqlite3") as connection:
        connection.execute(UPSTREAM_EVENTMATCH)
        connection.executemany(
            'INSERT INTO eventmatch VALUES (?, ?, ?, "dmlb2001", ?, ?, "https://e.org/hook", '
            '"v0.1", ?, ?, "2020-04-01 09:00:00.123456", "2020-04-01 09:00:00.123456", ?)',
            [(k.hex, n, "$", d, e, x, a, g) for k, n, x, a, d, e, g in rows],
        )

    assert notifications.cmd(["dbsync"]) == 0
    assert "imported 3 subscription(s)" in capsys.readouterr().out
    assert notifications.cmd(["dbsync"]) == 0
    assert "imported 0 subscription(s)" in capsys.readouterr().out

    listed = {s["uuid"]: s for s in map(registry.to_json, registry.list_for("dmlb2001"))}
    assert set(listed) == {str(live), str(disabled)}  # a deleted one is not listed, as upstream
    assert listed[str(live)]["auth"]["basic"] == {"username": "me", "password": "********"}
    assert listed[str(live)]["target_url"] == "https://e.org/hook"
    assert listed[str(disabled)]["extensions"] == {"site": "emsl"}
    assert listed[str(disabled)]["error"] == "policy 500"
    assert listed[str(disabled)]["disabled"] is not None
    stored = Subscription.get_by_id(live)
    assert (stored.auth["basic"]["password"], stored.jsonpath) == ("pw", "$")
    assert Subscription.get_by_id(deleted).deleted is not None


def test_db_sync_of_the_dispatcher_cli_imports_them_too(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(tmp_path / "compat.sqlite3") as connection:
        connection.execute(UPSTREAM_EVENTMATCH)
        connection.execute(
            'INSERT INTO eventmatch VALUES (?, "n", "$", "u", NULL, NULL, "https://e.org", "v0.1",'
            ' "{}", "{}", "2020-04-01 09:00:00", "2020-04-01 09:00:00", NULL)',
            (uuidlib.uuid4().hex,),
        )

    assert cli.main(["db", "sync"]) == 0
    assert "imported 1 subscription(s)" in capsys.readouterr().out
