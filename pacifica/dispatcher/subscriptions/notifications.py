"""Drop-in commands for scripts written against pacifica-notifications 0.5.2.

``pacifica-notifications [-c CONFIG] [--cpconfig CPCONFIG] [-p PORT] [-a ADDRESS]``
serves the same API (``/receive``, ``/eventmatch``) on port 8070 by default;
``pacifica-notifications-cmd`` keeps ``dbchk [--equal]``, ``dbsync``,
``eventget``, ``eventpurge`` and ``eventretry`` with upstream's output and exit
status: 0 on success (a uuid that is not there is no failure), 255 (upstream's
``-1``) when ``dbchk`` finds the schema does not match, 1 on an error such as an
unreachable database (upstream raised; here the message is one line, no
traceback). The database is tried ``DATABASE_CONNECT_ATTEMPTS`` times,
``DATABASE_CONNECT_WAIT`` seconds apart. ``dbsync`` also imports the
subscriptions of upstream's ``eventmatch`` table in the same database, once.
An upstream ``config.ini`` (sections ``[notifications]``, ``[celery]``,
``[database]``) is read for the settings it names; the environment still
wins where both set one.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import (
    DispatcherError,
    NotFoundError,
    SchemaMismatchError,
)
from pacifica.dispatcher.storage import (
    available,
    check_schema,
    connect_patiently,
    deliveries,
    events,
    iso,
    open_database,
    sync_schema,
    upstream,
)
from pacifica.dispatcher.storage.events import StoredEvent

FAILURE = 255  # upstream returned -1 from main, which the shell sees as 255
ERROR = 1  # upstream raised (a traceback), which the shell sees as 1
UPSTREAM_KEYS = {
    ("notifications", "policy_url"): "POLICY_URL",
    ("notifications", "user_header"): "USER_HEADER",
    ("DEFAULT", "default_user"): "DEFAULT_USER",
    ("celery", "broker_url"): "BROKER_URL",
    ("celery", "backend_url"): "BACKEND_URL",
    ("database", "peewee_url"): "DATABASE_URL",
    ("database", "connect_attempts"): "DATABASE_CONNECT_ATTEMPTS",
    ("database", "connect_wait"): "DATABASE_CONNECT_WAIT",
}
DEFAULT_CONFIG = Path("~/.pacifica-notifications/config.ini")


def upstream_settings(config_file: str | None) -> Settings:
    """Settings from the environment plus an upstream notifications ``config.ini`` (if any).

    Raises:
        ConfigurationError: a value cannot be parsed.
    """
    path = Path(
        config_file or os.environ.get("NOTIFICATIONS_CONFIG") or DEFAULT_CONFIG
    ).expanduser()
    environ = dict(os.environ)
    if path.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(path, encoding="utf-8")
        for (section, option), name in UPSTREAM_KEYS.items():
            value = parser.get(section, option, fallback=None)
            if value and name not in environ:
                environ[name] = value.replace("sqliteext://", "sqlite://")
    return Settings.from_env(environ)


def main(argv: Sequence[str] | None = None) -> int:
    """``pacifica-notifications``: run the server (receiver, /eventmatch, and on the embedded broker a worker)."""
    parser = argparse.ArgumentParser(
        prog="pacifica-notifications", description="Run the notifications server."
    )
    parser.add_argument("-c", "--config", help="notifications config.ini")
    parser.add_argument(
        "--cpconfig", default=os.environ.get("NOTIFICATIONS_CPCONFIG"), help="cherrypy config file"
    )
    parser.add_argument("-p", "--port", type=int, default=8070, help="port to listen on [8070]")
    parser.add_argument(
        "-a", "--address", default="localhost", help="address to listen on [localhost]"
    )
    args = parser.parse_args(argv)
    from pacifica.dispatcher import service

    try:
        settings = upstream_settings(args.config)
        built = service.build(settings)
        cpconfig = args.cpconfig if args.cpconfig and Path(args.cpconfig).is_file() else None
        service.run_server(built, args.address, args.port, cpconfig)
    except DispatcherError as exc:
        print(f"pacifica-notifications: error: {exc}", file=sys.stderr)
        return ERROR
    return 0


def build_cmd_parser() -> argparse.ArgumentParser:
    """The ``pacifica-notifications-cmd`` parser (upstream's subcommands and flags)."""
    parser = argparse.ArgumentParser(
        prog="pacifica-notifications-cmd", description="Admin commands."
    )
    parser.add_argument("-c", "--config", help="notifications config.ini")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dbsync", help="create or upgrade the database schema")
    dbchk = commands.add_parser(
        "dbchk", help="exit 0 when the schema is usable, non-zero otherwise"
    )
    dbchk.add_argument("--equal", action="store_true", help="require the exact schema version")
    for name in ("eventget", "eventpurge", "eventretry"):
        sub = commands.add_parser(name)
        sub.add_argument("uuids", nargs="*", metavar="UUID")
        sub.add_argument("--date-format", default="%Y-%m-%d %H:%M:%S")
        if name == "eventget":
            sub.add_argument("--limit", type=int, default=10)
            sub.add_argument("--start-date")
            sub.add_argument("--end-date")
        if name == "eventpurge":
            sub.add_argument("--older-than-date")
            sub.add_argument("--limit", type=int)
    return parser


def cmd(argv: Sequence[str] | None = None) -> int:
    """``pacifica-notifications-cmd``: upstream's admin commands on this service's database."""
    args = build_cmd_parser().parse_args(argv)
    try:
        settings = upstream_settings(args.config)
        database = open_database(settings.effective_database_url)
        connect_patiently(
            database, settings.database_connect_attempts, settings.database_connect_wait
        )
        with available():
            return _database_command(args, settings, database)
    except (DispatcherError, ValueError) as exc:
        print(f"pacifica-notifications-cmd: {exc}", file=sys.stderr)
        return ERROR


def _database_command(args: argparse.Namespace, settings: Settings, database: Any) -> int:
    if args.command == "dbsync":
        sync_schema(database)
        imported = upstream.import_notifications_subscriptions()
        if imported is not None:
            from pacifica.dispatcher.cli import upstream_import_report

            print(upstream_import_report(imported))
        return 0
    if args.command == "dbchk":
        try:
            check_schema(database)  # one version number: --equal and the default agree
        except SchemaMismatchError as exc:
            print(f"pacifica-notifications-cmd: {exc}", file=sys.stderr)
            return FAILURE
        return 0
    check_schema(database)
    return _event_command(args, settings)


def _date(text: str | None, fmt: str, default: datetime) -> datetime:
    if not text:
        return default
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


def _event_command(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(timezone.utc)
    if args.command == "eventget":
        start = _date(args.start_date, args.date_format, now - timedelta(days=1))
        end = _date(args.end_date, args.date_format, now)
        if start > end:
            raise ValueError("start date is after end date")
        found = (
            _records(args.uuids)
            if args.uuids
            else events.recent(args.limit, since=start, until=end)
        )
        for event in found:
            print(f"Event - {event.uuid}\n{json.dumps(event.document, ensure_ascii=False)}")
            for row in deliveries.deliveries_of(event.uuid):
                print(
                    f"    ELM {row.subscription} ({iso(row.created)}) policy {row.policy_status} target {row.target_status}"
                )
        return 0
    if args.command == "eventpurge":
        if args.uuids:
            events.delete_events([e.uuid for e in _records(args.uuids)])
        else:
            older = _date(args.older_than_date, args.date_format, now - timedelta(days=1))
            events.purge(older, args.limit)
        return 0
    from pacifica.dispatcher import cli

    task_ids = [str(r.uuid) for r in _records(args.uuids)]
    if not task_ids:
        return 0
    return 0 if cli.main(["events", "retry", *task_ids]) == 0 else FAILURE


def _records(uuids: list[str]) -> list[StoredEvent]:
    """The stored events with these ids; ids that are not there are skipped, as upstream.

    Raises:
        ValueError: an id is not a UUID (upstream failed too).
    """
    from pacifica.dispatcher.service import dispatch

    found = []
    for key in uuids:
        try:
            found.append(dispatch.get_event(key))
        except NotFoundError:
            continue
    return found
