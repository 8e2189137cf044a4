"""The upstream-compatible admin commands against a SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage.schema import Delivery, EventRecord
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
    assert notifications.cmd(["eventget", accepted.uuid]) == 255
