"""The running service; this module is its composition root: settings + router → database,
Celery app and WSGI app.

``web`` (CherryPy lives there only), ``intake`` (the receiver's group
commit), ``worker`` (Celery lives there only), ``dispatch`` (orchestration),
``outbox`` (publish, mark sent, sweep) and ``views`` (upstream JSON shapes).
Scaffolded projects call the same functions with their own router, so the
stand-alone service and a project built from the template run the same way.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import ServiceError
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service.intake import Intake
from pacifica.dispatcher.service.outbox import Outbox
from pacifica.dispatcher.service.supervisor import Supervisor
from pacifica.dispatcher.service.web import (
    EventMatch,
    MountableReceiver,
    Replays,
    RouteReplays,
    Verify,
    create_app,
    operator_mounts,
    serve,
    stop_serving,
)
from pacifica.dispatcher.service.worker import (
    WorkerContext,
    broker_check,
    create_celery,
    default_router,
    worker_arguments,
)
from pacifica.dispatcher.storage import (
    available,
    check_schema,
    code_schema_version,
    connect_patiently,
    open_database,
    schema_version,
    sync_schema,
)
from pacifica.dispatcher.subscriptions import SubscriptionRoute

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)
DEFAULT_WORKER_APP = "pacifica.dispatcher.worker:celery_app"


@dataclass(frozen=True)
class Service:
    """The wired parts of one dispatcher."""

    settings: Settings
    router: Router
    celery: Celery

    @property
    def events(self) -> Outbox[str]:
        """The events' outbox: send task messages and record what the broker took."""
        context: WorkerContext = self.celery.dispatcher_context
        return context.events

    @property
    def deliveries(self) -> Outbox[int]:
        """The deliveries' outbox."""
        context: WorkerContext = self.celery.dispatcher_context
        return context.deliveries

    def wsgi_app(
        self, mounts: dict[str, object] | None = None, verify: Verify | None = None
    ) -> Any:
        """The receiver/status WSGI app; /eventmatch too when the router has the registry's route.

        ``verify`` checks each ``POST /receive`` (headers, body) before it is parsed or stored.
        """
        registry = any(isinstance(r, SubscriptionRoute) for r in self.router.routes)
        builtin: dict[str, object] = {"eventmatch": EventMatch(self.settings)} if registry else {}
        names = [r.name for r in self.router.routes]
        builtin["routes"] = RouteReplays(self.settings, names)
        builtin["replays"] = Replays(self.settings)
        broker = broker_check(self.celery)
        builtin.update(operator_mounts(self.settings, names, self.deliveries.send, broker))
        intake = Intake(self.events.send)
        return create_app(self.settings, intake.submit, {**builtin, **(mounts or {})}, verify)

    def mountable_app(self) -> Any:
        """``wsgi_app`` as a ``cherrypy.Application``, for ``cherrypy.tree.mount`` (upstream ``__main__.py``)."""
        return MountableReceiver(self.wsgi_app())


def build(
    settings: Settings, router: Router | None = None, celery: Celery | None = None
) -> Service:
    """Wire a service; the router defaults to the stand-alone service's built-in routes."""
    router = router if router is not None else default_router(settings)
    return Service(settings, router, celery or create_celery(settings, router))


def wsgi_app_from_env(
    router_factory: Callable[[Settings], Router] = default_router, settings: Settings | None = None
) -> Any:
    """A project's WSGI application (for uWSGI or gunicorn), its database opened and checked.

    Raises:
        SchemaMismatchError: the database needs ``pacifica-dispatcher db sync``.
    """
    settings = settings or Settings.from_env()
    return_large_buffers_to_the_os()
    open_checked_database(settings)
    return build(settings, router_factory(settings)).wsgi_app()


def return_large_buffers_to_the_os() -> None:
    """Have glibc serve allocations of 1 MiB and more with mmap, so that freeing them returns them.

    glibc raises its mmap threshold after the first large block is freed, so
    later large request bodies come from the heap, which keeps its peak: a
    receiver sat at three times its size after a burst of 9 MB bodies
    (BENCHMARKS.md). Fixing the threshold keeps it near its idle size. A no-op
    where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold = -3  # mallopt's parameter number, from <malloc.h>
    libc.mallopt(m_mmap_threshold, 1 << 20)


def open_checked_database(settings: Settings) -> Any:
    """Open the database and insist its schema matches the code.

    The embedded SQLite database is created or upgraded on the spot, so the
    embedded default needs no setup; any other mismatch is refused (run
    ``pacifica-dispatcher db sync`` for a server database).

    Raises:
        SchemaMismatchError: the schema differs; the message says to run ``db sync``.
        StorageUnavailableError: no connection after ``DATABASE_CONNECT_ATTEMPTS``.
    """
    database = open_database(settings.effective_database_url)
    connect_patiently(database, settings.database_connect_attempts, settings.database_connect_wait)
    with available():
        if settings.database_url is None and schema_version(database) < code_schema_version():
            log.info("creating or upgrading the embedded database at %s", settings.data_path)
            sync_schema(database)
        check_schema(database)
    return database


def worker_command(
    worker_app: str, settings: Settings, loglevel: str = "INFO", deliveries: bool = False
) -> list[str]:
    """The command line of a Celery worker for ``worker_app`` (``module:attribute``): the
    events pool, or with ``deliveries`` the webhook deliveries' pool."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        worker_app,
        "worker",
        "--loglevel",
        loglevel,
        *worker_arguments(settings, deliveries),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def start_worker_process(
    worker_app: str, settings: Settings, deliveries: bool = False
) -> subprocess.Popen[bytes]:
    """Start a worker in a child process with this environment and these settings."""
    command = worker_command(worker_app, settings, deliveries=deliveries)
    log.info("starting worker: %s", " ".join(command))
    return subprocess.Popen(command, env={**os.environ, **settings.to_env()})


def run_server(
    service: Service,
    host: str,
    port: int,
    config_file: str | None = None,
    with_worker: bool | None = None,
    worker_app: str = DEFAULT_WORKER_APP,
    mounts: dict[str, object] | None = None,
) -> None:
    """Serve HTTP until interrupted; with the embedded broker, also run a supervised worker.

    Raises:
        ServiceError: the worker kept exiting and was not restarted again.
    """
    return_large_buffers_to_the_os()
    open_checked_database(service.settings)
    if with_worker is None:
        with_worker = service.settings.embedded_broker
    failures: list[str] = []

    def give_up(reason: str) -> None:
        log.critical("stopping: %s", reason)
        failures.append(reason)
        stop_serving()

    def starter(deliveries: bool) -> Callable[[], subprocess.Popen[bytes]]:
        return lambda: start_worker_process(worker_app, service.settings, deliveries)

    workers = [
        Supervisor(name, starter(deliveries), give_up)
        for name, deliveries in (("worker", False), ("delivery worker", True))
        if with_worker
    ]
    for worker in workers:
        worker.begin()

    def stop_workers() -> None:
        for worker in workers:
            worker.stop()

    try:
        serve(service.wsgi_app(mounts), host, port, config_file, stop_workers)
    finally:
        stop_workers()
    if failures:
        raise ServiceError(failures[0])
