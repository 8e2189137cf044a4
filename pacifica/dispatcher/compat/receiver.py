"""Upstream 0.2.5's ``receiver``: ``create_peewee_model(db)`` for an unchanged ``__main__.py``.

An upstream project's entry point does, at import::

    ReceiveTaskModel = create_peewee_model(db)
    ReceiveTaskModel.create_table(safe=True)
    celery_app = ReceiveTaskModel.create_celery_app(router, NAME, TASK, backend=…, broker=…)
    application = ReceiveTaskModel.create_cherrypy_app(celery_app.tasks[TASK])

and then mounts ``application`` on CherryPy (or serves it with uWSGI) and
runs ``celery -A …:celery_app worker``. Here those calls wire the new
service through its composition root: events are stored before they are
acknowledged (``POST /receive`` answers 202), stored once, every matching
route runs, and the worker's sweeper recovers what the broker loses. The
tables are this service's (``db sync``), in the database ``db`` points to.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pacifica.dispatcher.compat.event import Event
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.router import Route, Router
from pacifica.dispatcher.storage import (
    available,
    connect_patiently,
    open_database,
    sync_schema,
    url_of,
)

if TYPE_CHECKING:
    from celery import Celery, Task
    from cloudevents.core.v1.event import CloudEvent

__all__ = ["ReceiveTaskModel", "UpstreamEventHandler", "create_peewee_model"]


class UpstreamEventHandler(EventHandler):
    """Runs an upstream handler with the event object it was written for: a 0.1 event as
    ``Event`` (``event.data``, ``event.event_id``), any other as the CloudEvent."""

    def __init__(self, handler: EventHandler) -> None:
        self.handler = handler

    def handle(self, event: CloudEvent) -> None:
        """Hand the event to the upstream handler."""
        self.handler.handle(event)

    def handle_received(self, received: ReceivedEvent) -> None:
        """Hand the upstream handler an ``Event`` of a 0.1 document, else the CloudEvent.

        Raises:
            RuntimeError: the 0.1 document is not a valid ``Event`` (upstream's check).
        """
        if "cloudEventsVersion" in received.document:
            self.handler.handle(Event(received.document))  # type: ignore[arg-type]
        else:
            self.handler.handle(received.event)


def upstream_routes(router: Router) -> Router:
    """A copy of ``router`` whose plain routes run their handlers through ``UpstreamEventHandler``."""
    return Router(
        [
            replace(r, event_handler=UpstreamEventHandler(r.event_handler))
            if type(r) is Route
            else r
            for r in router.routes
        ]
    )


class ReceiveTaskModel:
    """What upstream's ``create_peewee_model`` returned, on the new service."""

    def __init__(self, database: Any) -> None:
        self.database = database

    def settings(self, **overrides: Any) -> Settings:
        """The environment's settings on this model's database (an in-memory SQLite
        database, upstream's default, becomes the embedded default: it cannot be shared).

        Raises:
            ConfigurationError: a setting or the database cannot be used.
        """
        return Settings.from_env().with_overrides(database_url=url_of(self.database), **overrides)

    def create_table(self, safe: bool = True, **_: Any) -> None:
        """Create or upgrade this service's tables in the database (``db sync``).

        Connects patiently (``DATABASE_CONNECT_ATTEMPTS``/``DATABASE_CONNECT_WAIT``).

        Raises:
            StorageUnavailableError: the database cannot be reached.
            SchemaMismatchError: the database is newer than this code.
        """
        del safe  # creating is always safe here: existing tables are kept
        settings = self.settings()
        database = open_database(settings.effective_database_url)
        connect_patiently(
            database, settings.database_connect_attempts, settings.database_connect_wait
        )
        with available():
            sync_schema(database)

    def create_celery_app(
        self, router: Router, name: str, receive_task_name: str, *args: Any, **kwargs: Any
    ) -> Celery:
        """The worker's Celery app for ``router``; ``broker=``/``backend=`` as upstream.

        ``receive_task_name`` is registered too: messages an upstream receiver
        left in the broker are stored and processed the new way. Other Celery
        arguments are not used.
        """
        from pacifica.dispatcher.service.worker import add_document_task, create_celery

        del args
        names = {"broker": "broker_url", "backend": "backend_url"}
        overrides = {names[k]: v for k, v in kwargs.items() if k in names and v}
        app = create_celery(self.settings(**overrides), upstream_routes(router), name)
        add_document_task(app, receive_task_name)
        return app

    def create_cherrypy_app(self, receive_task: Task) -> Any:
        """The receiver and status API as a ``cherrypy.Application`` (also a WSGI app).

        Raises:
            StorageUnavailableError: the database cannot be reached.
            SchemaMismatchError: the database needs ``pacifica-dispatcher db sync``.
        """
        from pacifica.dispatcher import service

        app = receive_task.app
        context = app.dispatcher_context
        service.open_checked_database(context.settings)
        return service.build(context.settings, context.router, app).mountable_app()


def create_peewee_model(passed_db: Any) -> ReceiveTaskModel:
    """Upstream's entry: the receiver bound to ``passed_db`` (a peewee database)."""
    return ReceiveTaskModel(passed_db)
