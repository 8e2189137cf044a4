"""Settings: environment, INI file, aliases and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import ConfigurationError


def test_defaults_give_the_embedded_deployment(tmp_path: Path) -> None:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    assert settings.embedded_broker
    assert settings.effective_database_url == f"sqlite:///{tmp_path}/dispatcher.sqlite3"


def test_peewee_url_is_an_alias_for_database_url() -> None:
    assert Settings.from_env({"PEEWEE_URL": "postgresql://x/y"}).database_url == "postgresql://x/y"
    both = Settings.from_env({"PEEWEE_URL": "sqlite:///a", "DATABASE_URL": "sqlite:///b"})
    assert both.database_url == "sqlite:///b"


def test_ini_file_fills_what_the_environment_does_not(tmp_path: Path) -> None:
    ini = tmp_path / "dispatcher.ini"
    ini.write_text("[dispatcher]\nbroker_url = redis://x/1\nmax_body_size = 5\n", encoding="utf-8")
    settings = Settings.from_env({"DISPATCHER_CONFIG": str(ini), "MAX_BODY_SIZE": "7"})
    assert settings.broker_url == "redis://x/1"
    assert settings.max_body_bytes == 7


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="MAX_BODY_SIZE"):
        Settings.from_env({"MAX_BODY_SIZE": "lots"})
    with pytest.raises(ConfigurationError, match="AUTHENTICATION_TYPE"):
        Settings.from_env({"AUTHENTICATION_TYPE": "kerberos"})
    with pytest.raises(ConfigurationError, match="DISPATCHER_CONFIG"):
        Settings.from_env({"DISPATCHER_CONFIG": "/nonexistent/x.ini"})


def test_requests_options_follow_the_auth_type() -> None:
    basic = Settings.from_env(
        {
            "AUTHENTICATION_TYPE": "basic",
            "AUTHENTICATION_USERNAME": "u",
            "AUTHENTICATION_PASSWORD": "p",
            "TLS_VERIFY": "false",
        }
    )
    assert basic.requests_options() == {"verify": False, "auth": ("u", "p")}
    header = Settings.from_env(
        {"AUTHENTICATION_TYPE": "header", "AUTHENTICATION_HEADER": "X-Http-Authed-User: 10"}
    )
    assert header.requests_options()["headers"] == {"X-Http-Authed-User": "10"}


def test_settings_survive_the_trip_through_a_child_process_environment(tmp_path: Path) -> None:
    """``serve`` hands its settings (config file included) to the worker it starts this way."""
    ini = tmp_path / "dispatcher.ini"
    ini.write_text(
        "[dispatcher]\ndatabase_url = sqlite:////tmp/x.sqlite3\ntls_verify = false\n",
        encoding="utf-8",
    )
    settings = Settings.from_env(
        {"DISPATCHER_CONFIG": str(ini), "REQUEUE_AFTER": "7.5", "EVENTS_PER_MESSAGE": "3"}
    )
    assert Settings.from_env(settings.to_env()) == settings
    assert settings.to_env()["DATABASE_URL"] == "sqlite:////tmp/x.sqlite3"
