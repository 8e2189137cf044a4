"""The ``pacifica-dispatcher`` command line: serve, worker, db, events, new.

``python -m pacifica.dispatcher`` with no command runs ``serve``, as the
upstream example's ``python -m pacifica.dispatcher_example`` did.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from pacifica.dispatcher import __version__
from pacifica.dispatcher.config import Settings, settings_table
from pacifica.dispatcher.errors import DispatcherError
from pacifica.dispatcher.history import command as history_command
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.storage import (
    available,
    check_schema,
    code_schema_version,
    connect_patiently,
    deliveries,
    events,
    open_database,
    schema_version,
    sync_schema,
    upstream,
)

log = logging.getLogger("pacifica.dispatcher")
EPILOG = "environment variables:\n" + "\n".join(
    f"  {name:<24} {doc}" + (f" [default: {default}]" if default else "")
    for name, default, doc in settings_table()
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pacifica-dispatcher",
        description="Receive Pacifica CloudEvents and route them to event handlers on Celery workers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(commands)
    _add_worker(commands)
    _add_db(commands)
    _add_events(commands)
    _add_new(commands)
    _add_consumer(commands)
    history_command.add_jsonpath_parser(commands)
    history_command.add_lineage_parser(commands)
    return parser


def _add_consumer(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    consumer = commands.add_parser(
        "consumer", help="consumer.zip tools (start one with start-pacifica-notifications-consumer)"
    )
    actions = consumer.add_subparsers(dest="consumer_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a consumer.zip; exit 0 when valid")
    check.add_argument("archive", metavar="consumer.zip")


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the HTTP receiver (and, on the embedded broker, a worker)",
        description="Run the HTTP receiver. Without BROKER_URL a worker is started too.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    serve.add_argument("--port", type=int, default=8069, help="port to listen on [8069]")
    serve.add_argument("--config", help="CherryPy config file, applied after --host/--port")
    worker = serve.add_mutually_exclusive_group()
    worker.add_argument("--with-worker", dest="with_worker", action="store_true", default=None)
    worker.add_argument("--no-worker", dest="with_worker", action="store_false")


def _add_worker(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser("worker", help="run a Celery worker against BROKER_URL")
    worker.add_argument("--concurrency", type=int, help="worker processes [WORKER_CONCURRENCY]")
    worker.add_argument("--loglevel", default="INFO", help="Celery log level [INFO]")
    worker.add_argument("--pool", default=None, help="Celery pool: prefork, solo, threads")
    worker.add_argument(
        "--deliveries",
        action="store_true",
        help="run the webhook deliveries' pool (DELIVERY_CONCURRENCY threads) instead of events",
    )


def _add_db(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    database = commands.add_parser("db", help="check or create/migrate the database schema")
    actions = database.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    actions.add_parser("check", help="exit 0 when the schema matches this code, 1 otherwise")
    actions.add_parser("sync", help="create the schema or apply pending migrations")


def _add_events(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = commands.add_parser(
        "events", help="inspect, purge, requeue, retry or replay stored events"
    )
    actions = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    get = actions.add_parser("get", help="show events (by task id, or the most recent)")
    get.add_argument("ids", nargs="*", metavar="ID", help="task ids")
    get.add_argument("--since", type=parse_date, help="created at or after (ISO date/time)")
    get.add_argument("--until", type=parse_date, help="created before (ISO date/time)")
    get.add_argument("--limit", type=int, default=10, help="how many recent events [10]")
    purge = actions.add_parser(
        "purge", help="delete events created before a date, with their delivery records"
    )
    purge.add_argument("--older-than", type=parse_date, required=True, help="ISO date/time")
    purge.add_argument("--limit", type=int, help="delete at most this many")
    actions.add_parser("requeue", help="enqueue stranded events (accepted or stuck) again")
    retry = actions.add_parser(
        "retry",
        help="run events again (routes that succeeded stay done) and redeliver their "
        "dead-lettered, failed or refused deliveries",
    )
    retry.add_argument("ids", nargs="+", metavar="ID", help="task ids")
    history_command.add_replay_parser(actions)


def _add_new(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    new = commands.add_parser(
        "new",
        help="create a pacifica-dispatcher-<name> project from the template",
        description="Create a dispatcher project: 'Hello, world!' makes "
        "pacifica-dispatcher-hello-world with package pacifica/dispatcher_hello_world.",
    )
    new.add_argument("name", nargs="?", default="Example", help="project name [Example]")
    new.add_argument("--output-dir", default=".", help="where to create the project [.]")
    new.add_argument("--no-input", action="store_true", help="do not prompt for the name")


# Upstream projects ran `python -m pacifica.dispatcher_example --port N`: serve's options alone.
SERVE_OPTIONS = ("--host", "--port", "--config", "--with-worker", "--no-worker")


def serve_by_default(argv: Sequence[str] | None) -> list[str]:
    """The arguments, with ``serve`` put in front when they start with one of serve's options."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0].split("=", 1)[0] in SERVE_OPTIONS:
        return ["serve", *args]
    return args


def _new(args: argparse.Namespace) -> int:
    from pacifica.dispatcher import scaffold

    project = scaffold.create_project(args.name, args.output_dir, no_input=args.no_input)
    steps = "\n".join(f"  {step}" for step in scaffold.next_steps(project))
    print(f"created {project}\n\nnext:\n{steps}")
    return 0


def parse_date(text: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC.

    Raises:
        argparse.ArgumentTypeError: the text is not such a date.
    """
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or date-time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def main(
    argv: Sequence[str] | None = None,
    router_factory: Callable[[Settings], Router] | None = None,
    worker_app: str | None = None,
) -> int:
    """Run the CLI; scaffolded projects pass their own router factory and worker app path."""
    args = build_parser().parse_args(serve_by_default(argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "new":  # needs no settings: scaffolding must work anywhere
            return _new(args)
        if args.command == "consumer":  # checks a file only: no settings, no database
            from pacifica.dispatcher.consumer.archive import check_archive

            report = check_archive(args.archive)
            print(report.text())
            return 0 if report.ok else 1
        settings = Settings.from_env()
        with available():  # a database that cannot be reached is an error message, not a traceback
            return _run(args, settings, router_factory, worker_app)
    except DispatcherError as exc:
        print(f"pacifica-dispatcher: error: {exc}", file=sys.stderr)
        return 2


def project_entry_points(
    router_factory: Callable[[Settings], Router], worker_app: str
) -> tuple[Callable[[str], Any], Callable[[], int]]:
    """A dispatcher project's module ``__getattr__`` (a lazy ``celery_app``) and its ``main``.

    In a project's ``__main__.py``::

        __getattr__, main = project_entry_points(create_router, "pkg.__main__:celery_app")

    ``celery -A pkg.__main__:celery_app worker`` then finds the app, built on
    first access from the environment, and ``main()`` runs this CLI with the
    project's routes.
    """
    built: dict[str, Any] = {}

    def module_getattr(name: str) -> Any:
        if name != "celery_app":
            raise AttributeError(name)
        if name not in built:
            from pacifica.dispatcher.service.worker import celery_app_from_env

            built[name] = celery_app_from_env(router_factory)
        return built[name]

    def project_main() -> int:
        return main(router_factory=router_factory, worker_app=worker_app)

    return module_getattr, project_main


def _run(
    args: argparse.Namespace,
    settings: Settings,
    router_factory: Callable[[Settings], Router] | None,
    worker_app: str | None,
) -> int:
    # Imported here so `--help` and `db` stay fast and never load CherryPy or Celery.
    from pacifica.dispatcher import service

    command = args.command or "serve"
    if command == "db":
        return _db(args.db_command, settings)
    if command == "events":
        return _events(args, settings, router_factory)
    if command == "jsonpath":
        service.open_checked_database(settings)
        return history_command.run_jsonpath(args)
    if command == "lineage":
        service.open_checked_database(settings)
        return history_command.run_lineage(args)
    router = router_factory(settings) if router_factory else None
    built = service.build(settings, router)
    if command == "worker":
        service.open_checked_database(settings)
        return _worker(built.celery, args, settings)
    host = getattr(args, "host", "127.0.0.1")
    port = getattr(args, "port", 8069)
    service.run_server(
        built,
        host,
        port,
        getattr(args, "config", None),
        getattr(args, "with_worker", None),
        worker_app or service.DEFAULT_WORKER_APP,
    )
    return 0


def _worker(celery_app: object, args: argparse.Namespace, settings: Settings) -> int:
    from pacifica.dispatcher.service.worker import worker_arguments

    argv = ["worker", "--loglevel", args.loglevel, "--without-gossip"]
    argv += worker_arguments(settings, deliveries=args.deliveries)  # later options win
    if args.pool:
        argv += ["--pool", args.pool]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    celery_app.worker_main(argv)  # type: ignore[attr-defined]
    return 0


def _db(action: str, settings: Settings) -> int:
    database = open_database(settings.effective_database_url)
    connect_patiently(database, settings.database_connect_attempts, settings.database_connect_wait)
    if action == "sync":
        applied = sync_schema(database)
        print("\n".join(f"applied migration {a}" for a in applied) or "schema is up to date")
        imported = upstream.import_notifications_subscriptions()
        if imported is not None:
            print(upstream_import_report(imported))
        return 0
    try:
        check_schema(database)
    except DispatcherError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"schema version {schema_version(database)} matches the code ({code_schema_version()})")
    return 0


def upstream_import_report(imported: int) -> str:
    """What ``db sync`` says about subscriptions taken over from pacifica-notifications' tables."""
    return f"imported {imported} subscription(s) from pacifica-notifications' eventmatch table"


def _events(
    args: argparse.Namespace,
    settings: Settings,
    router_factory: Callable[[Settings], Router] | None,
) -> int:
    from pacifica.dispatcher import service
    from pacifica.dispatcher.service import dispatch, views

    service.open_checked_database(settings)
    action = args.events_command
    if action == "get":
        found = (
            [dispatch.get_event(i) for i in args.ids]
            if args.ids
            else events.recent(limit=args.limit, since=args.since, until=args.until)
        )
        for event in found:
            shown = {**views.describe(event), "deliveries": views.describe_deliveries(event)}
            print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    if action == "purge":
        deleted = events.purge(args.older_than, args.limit, _progress_printer())
        print(f"purged {deleted} event(s) created before {args.older_than.isoformat()}")
        return 0
    router = router_factory(settings) if router_factory else None
    built = service.build(settings, router)
    if action == "replay" and args.route:
        return history_command.run_route_replay(args, built.events, built.deliveries)
    if action == "replay":
        return history_command.run_replay(args, built.events, built.deliveries)
    if action == "requeue":
        ids = events.claim_stranded(0, settings.processing_lease)
    else:
        ids = dispatch.reset_for_retry(args.ids)
    sent = built.events.send(ids)
    print(f"enqueued {len(sent)} of {len(ids)} event(s)")
    if action == "retry":
        return max(_retry_deliveries(built, ids), int(len(sent) != len(ids)))
    return 0 if len(sent) == len(ids) else 1


def _progress_printer() -> Callable[[int, int], None] | None:
    """A ``done/total`` line on stderr when it is a terminal; nothing for scripts and logs."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\rpurging: {done}/{total} event(s)", end=end, file=sys.stderr, flush=True)

    return show


def _retry_deliveries(built: Any, task_ids: list[str]) -> int:
    """Make the events' dead-lettered and failed deliveries pending again and send them."""
    ids = deliveries.reset_for_retry([uuid.UUID(t) for t in task_ids])
    sent = built.deliveries.send(ids)
    print(f"redelivering {len(sent)} of {len(ids)} deliver(y/ies)")
    return 0 if len(sent) == len(ids) else 1
