"""The Celery side (Celery lives here only): an app factory, two thin tasks, and the sweeper.

``create_celery(settings, router)`` builds an app whose process task takes
the stored events a message names (one, or several that arrived together)
and hands them to ``dispatch.process_many``, and whose deliver task makes one
attempt at one webhook delivery. Messages are acknowledged only after the
work is recorded (``acks_late``) and re-queued if the worker process dies; on
top of that a sweeper thread in every worker sends again what the broker
lost, through the two outboxes (events and deliveries).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import InvalidEventError, StorageUnavailableError
from pacifica.dispatcher.events import parse_document
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.broker import REDIS_TRANSPORT
from pacifica.dispatcher.service.broker import TRANSPORT as EMBEDDED_TRANSPORT
from pacifica.dispatcher.service.housekeeping import Housekeeper, worker_name
from pacifica.dispatcher.service.outbox import Outbox, delivery_outbox, event_outbox
from pacifica.dispatcher.service.views import TASK_NAME
from pacifica.dispatcher.storage import (
    available,
    check_schema,
    connect_patiently,
    forget_connection,
    open_database,
)
from pacifica.dispatcher.subscriptions import delivery
from pacifica.dispatcher.subscriptions.route import add_subscription_route

log = logging.getLogger(__name__)
# A message still being worked on after this many seconds hands its other events back.
HAND_BACK_AFTER = 1.0
DELIVERY_TASK = "pacifica.dispatcher.deliver"
EVENT_QUEUE = "celery"  # Celery's default queue: messages sent by earlier versions still run
DELIVERY_QUEUE = "pacifica.dispatcher.deliveries"


@dataclass
class WorkerContext:
    """What the tasks need in a worker process: settings, router, outboxes, a lazily opened database."""

    settings: Settings
    router: Router
    events: Outbox[str]
    deliveries: Outbox[int]
    name: str = field(default_factory=worker_name)  # set in the main process, kept by children
    _database: Any = field(default=None, repr=False)
    _sessions: threading.local = field(default_factory=threading.local, repr=False)
    _opening: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def housekeeper(self) -> Housekeeper:
        """This worker's housekeeping (built once)."""
        if not hasattr(self, "_housekeeper"):
            self._housekeeper = Housekeeper(
                self.name, self.settings, self.events, self.deliveries, self.database
            )
        return self._housekeeper

    def session(self) -> Any:
        """This thread's HTTP session for policy checks and webhook deliveries (the delivery
        pool runs threads; a ``requests`` session is not shared between them)."""
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = delivery.new_session()
        return session

    def database(self) -> Any:
        """Open the database on first use in this process and check its schema.

        Raises:
            SchemaMismatchError: the database needs ``pacifica-dispatcher db sync``.
            StorageUnavailableError: it cannot be reached.
        """
        with self._opening:
            if self._database is None:
                database = open_database(self.settings.effective_database_url)
                connect_patiently(database, 1, 0)
                with available():
                    check_schema(database)
                self._database = database
        return self._database


def broker_options(settings: Settings) -> dict[str, Any]:
    """Transport options for the configured broker (creating the embedded broker's folders)."""
    url = settings.effective_broker_url
    if settings.embedded_broker:
        root = settings.data_path / "broker"
        folders = {
            "queue": root / "queue",
            "processed": root / "processed",
            "control": root / "control",
            "wake": root / "wake",
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
            "wake_folder": str(folders["wake"]),  # consumers' doorbells: no waiting for a poll
            "polling_interval": 0.1,
        }
    if url.startswith(("redis", "rediss")):
        # Unacked messages come back after a crash in seconds, not minutes; the
        # visibility timeout must exceed the slowest handler or it runs twice.
        return {
            "visibility_timeout": settings.processing_lease + 60,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
        }
    return {}


def create_celery(settings: Settings, router: Router, name: str = "pacifica.dispatcher") -> Celery:
    """A Celery app that processes stored events through ``router``."""
    app = Celery(
        name,
        broker=settings.effective_broker_url,
        backend=settings.backend_url,
        set_as_current=False,
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=settings.worker_prefetch,
        worker_concurrency=settings.worker_concurrency,
        worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_options(settings),
        task_serializer="json",
        accept_content=["json"],
    )
    if settings.embedded_broker:
        app.conf.broker_transport = EMBEDDED_TRANSPORT
    elif settings.effective_broker_url.startswith("redis://"):
        app.conf.broker_transport = REDIS_TRANSPORT
    app.dispatcher_context = WorkerContext(
        settings,
        router,
        event_outbox(
            lambda ids, delay: enqueue(app, ids, countdown=delay), settings.processing_lease
        ),
        delivery_outbox(
            lambda ids, delay: _publish(app, DELIVERY_TASK, [[i] for i in ids], ids, delay)
        ),
    )
    route_deliveries(app)
    app.task(name=TASK_NAME, bind=True, ignore_result=True)(process_task)
    app.task(name=DELIVERY_TASK, bind=True, ignore_result=True)(deliver_task)
    worker_ready.connect(start_sweeper, weak=False, dispatch_uid="pacifica.dispatcher.sweeper")
    worker_shutdown.connect(stop_sweeper, weak=False, dispatch_uid="pacifica.dispatcher.stop")
    worker_process_init.connect(forget_parent_connection, weak=False, dispatch_uid="pacifica.fork")
    return app


def add_document_task(app: Celery, name: str) -> Task:
    """Register ``name`` as a task that stores one event document and enqueues it.

    Upstream 0.2.5 receivers sent each event as a message to a task of the
    project's choosing; messages of that kind still in the broker after the
    switch are taken in here, stored (a duplicate is not stored twice) and
    processed the new way.
    """
    task: Task = app.task(name=name, bind=True, ignore_result=True)(document_task)
    return task


def document_task(task: Task, event_data: Any) -> list[str]:
    """Celery task: store an event document (an upstream message) and enqueue it; its task ids."""
    context: WorkerContext = task.app.dispatcher_context
    try:
        received = parse_document(event_data)
    except InvalidEventError as exc:
        log.warning("message %s dropped: not an event: %s", task.request.id, exc)
        return []
    with retry_while_unavailable(task, context):
        context.database()
        accepted = dispatch.accept([received])
    context.events.send([a.uuid for a in accepted if a.created])
    return [a.uuid for a in accepted]


def route_deliveries(app: Celery) -> None:
    """Send deliveries to their own queue, so a slow target never holds an event's worker.

    A worker started without ``-Q`` consumes both queues (as the test harness
    and old deployments do); ``worker_arguments`` gives each pool its queue.
    """
    app.conf.task_queues = {
        name: {"exchange": name, "routing_key": name} for name in (EVENT_QUEUE, DELIVERY_QUEUE)
    }
    app.conf.task_default_queue = EVENT_QUEUE
    app.conf.task_routes = {DELIVERY_TASK: {"queue": DELIVERY_QUEUE}}


def worker_arguments(settings: Settings, deliveries: bool = False) -> list[str]:
    """Celery worker arguments for the events pool (processes) or the deliveries pool (threads).

    Deliveries wait on the network, so their pool is ``DELIVERY_CONCURRENCY``
    threads; at most ``DELIVERY_HOST_LIMIT`` of them serve one target host.
    """
    if deliveries:
        return [
            "--queues",
            DELIVERY_QUEUE,
            "--pool",
            "threads",
            "--concurrency",
            str(settings.delivery_concurrency),
            "--hostname",
            "deliveries@%h",
        ]
    events = [
        "--queues",
        EVENT_QUEUE,
        "--concurrency",
        str(settings.worker_concurrency),
        "--hostname",
        "events@%h",
    ]
    if settings.embedded_broker:
        # With a transport that cannot wake the pool (the embedded file broker), billiard's
        # prefork children share one queue lock: a child killed while waiting holds it for
        # good and the worker, alive and beating, never runs another event (BENCHMARKS.md,
        # soak). Threads cannot be killed one at a time.
        events += ["--pool", "threads"]
    return events


def process_task(task: Task, *task_ids: str) -> dict[str, str]:
    """Celery task: process the stored events a message names; their status strings by id.

    Once the message has taken ``HAND_BACK_AFTER`` seconds, its events not yet
    started go back to the broker one per message, so other worker processes
    share them instead of waiting behind a slow handler.
    """
    context: WorkerContext = task.app.dispatcher_context
    limit = HAND_BACK_AFTER if len(task_ids) > 1 else None
    with retry_while_unavailable(task, context):
        context.database()
        done = dispatch.process_many(
            task_ids,
            context.router,
            time_limit=limit,
            claimant=task.request.id,
            lease=context.settings.processing_lease,
            send_deliveries=context.deliveries.send,
            holder=context.name,
        )
    for task_id in done.missing:  # purged since the message was sent
        log.warning("event %s no longer exists; message dropped", task_id)
    if done.handed_back:
        sent = enqueue(task.app, done.handed_back, per_message=1)
        log.info("handed %d event(s) back to the queue", len(sent))
    return {task_id: status.http for task_id, status in done.statuses.items()}


def deliver_task(task: Task, delivery_id: int) -> str | None:
    """Celery task: one attempt at one delivery; a retry soon enough is sent with a countdown.

    A retry further away than the processing lease (the Redis visibility
    timeout is 60 s longer) gets no message: the sweeper sends it when due.
    """
    context: WorkerContext = task.app.dispatcher_context
    with retry_while_unavailable(task, context):
        context.database()
        outcome = delivery.attempt(
            delivery_id, context.settings, context.session(), holder=context.name
        )
    if outcome is None:
        return None
    if outcome.retry_in is not None and outcome.retry_in <= context.settings.processing_lease:
        context.deliveries.send([delivery_id], delay=outcome.retry_in)
    return outcome.status.name


@contextlib.contextmanager
def retry_while_unavailable(task: Task, context: WorkerContext) -> Iterator[None]:
    """Send the message again after ``DATABASE_CONNECT_WAIT`` when the database is unreachable.

    The same task id comes back, so events this message already claimed are
    taken back at once; if even that send fails, the sweeper finds the events.
    """
    try:
        with available():
            yield
    except StorageUnavailableError as exc:
        wait = context.settings.database_connect_wait
        log.warning("%s; message %s retried in %g s", exc, task.request.id, wait)
        raise task.retry(countdown=wait, max_retries=None, exc=exc) from exc


def enqueue(
    app: Celery, task_ids: Sequence[str], per_message: int | None = None, countdown: float = 0
) -> list[str]:
    """Send the events' messages without retrying; return the ids the broker took.

    Each message carries up to ``per_message`` events (default
    ``EVENTS_PER_MESSAGE``) and has its own Celery task id, which claims the
    events while they are processed (``dispatch.process_many``).
    """
    ids = list(task_ids)
    size = per_message or app.dispatcher_context.settings.events_per_message
    groups = [ids[start : start + size] for start in range(0, len(ids), size)]
    return _publish(app, TASK_NAME, groups, ids, countdown)


def _publish(
    app: Celery, task: str, messages: list[list[Any]], keys: list[Any], countdown: float
) -> list[Any]:
    """Send one message per argument list, without retrying; the keys of the messages sent.

    A broker that is down costs the caller one quick failure, not a hang: the
    rows stay in the database and the sweeper sends them later.
    """
    sent: list[Any] = []
    for args in messages:
        try:
            app.send_task(task, args=args, countdown=countdown or None, retry=False)
        except Exception as exc:  # kombu raises several unrelated types when down
            log.warning(
                "broker unavailable, %d message key(s) left for the sweeper: %s",
                len(keys) - len(sent),
                exc,
            )
            break
        sent.extend(args)
    return sent


def start_sweeper(sender: Any = None, **_: Any) -> None:
    """``worker_ready`` receiver: start this worker's housekeeping thread (heartbeat, sweeps)."""
    app = getattr(sender, "app", None)
    if app is None or not hasattr(app, "dispatcher_context"):
        return
    keeper = app.dispatcher_context.housekeeper
    threading.Thread(target=keeper.run, name="housekeeping", daemon=True).start()


def stop_sweeper(sender: Any = None, **_: Any) -> None:
    """``worker_shutdown`` receiver: stop the housekeeping thread (it signs the worker off)."""
    app = getattr(sender, "app", None)
    if app is not None and hasattr(app, "dispatcher_context"):
        app.dispatcher_context.housekeeper.stop.set()


def forget_parent_connection(**_: Any) -> None:
    """``worker_process_init`` receiver: a forked child must not share its parent's socket."""
    forget_connection()


def broker_check(app: Celery, timeout: float = 3.0) -> Callable[[], None]:
    """A check that the app's broker accepts a connection now (for ``/readyz``)."""

    def check() -> None:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)

    return check


def default_router(settings: Settings) -> Router:
    """The stand-alone service's router: the subscription registry's route."""
    router = Router()
    add_subscription_route(router, jsonpath_budget=settings.jsonpath_budget)
    return router


def celery_app_from_env(router_factory: Callable[[Settings], Router]) -> Celery:
    """A project's Celery app from the environment's settings (for ``celery -A module:celery_app``).

    Call it from a module ``__getattr__`` so importing the module does no work.
    """
    settings = Settings.from_env()
    return create_celery(settings, router_factory(settings))
