"""Event handlers: the code a route runs for a matching event."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from pacifica.dispatcher.events import ReceivedEvent

if TYPE_CHECKING:
    from cloudevents.core.v1.event import CloudEvent  # the type handlers receive


class EventHandler(abc.ABC):
    """Base class of every event handler.

    ``handle`` receives a ``cloudevents.core`` CloudEvent (a legacy 0.1 event
    arrives with its attributes mapped to 1.0 names). It should be idempotent:
    the dispatcher delivers at least once, so an event may be handled again
    after a worker crash.
    """

    @abc.abstractmethod
    def handle(self, event: CloudEvent) -> None:
        """Process one event; raise to mark the route as failed."""

    def handle_received(self, received: ReceivedEvent) -> str | None:
        """Entry point used by routes; built-in handlers override it to see the raw document.

        A string returned is recorded with the run as its report (``GET /get``'s ``report``).
        """
        self.handle(received.event)
        return None


class NoopEventHandler(EventHandler):
    """Does nothing: for routes that only need to record a match."""

    def handle(self, event: CloudEvent) -> None:
        """Accept the event and do nothing."""


class ExceptionEventHandler(EventHandler):
    """Always raises: for testing failure paths."""

    def handle(self, event: CloudEvent) -> None:
        """Raise an exception.

        Raises:
            Exception: always.
        """
        raise Exception("ExceptionEventHandler has raised an exception.")
