"""Helpers for handler authors' own tests: build events, run a router, see what ran."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.events import ReceivedEvent, parse_document
from pacifica.dispatcher.router import RouteOutcome, Router

if TYPE_CHECKING:
    from cloudevents.core.v1.event import CloudEvent  # the type handlers receive


def event_from_dict(document: Mapping[str, Any]) -> ReceivedEvent:
    """A ``ReceivedEvent`` from an event document (CloudEvents 0.1 or 1.0 structured JSON).

    Raises:
        InvalidEventError: the document is not a valid CloudEvent.
    """
    return parse_document(dict(document))


def load_event(path: str | os.PathLike[str]) -> ReceivedEvent:
    """Load ``event.json``, or the ``event.json`` inside a ``test_files/<eventID>`` directory.

    Raises:
        InvalidEventError: the file does not hold a valid CloudEvent.
        OSError: the file cannot be read.
    """
    location = Path(path)
    if location.is_dir():
        location = location / "event.json"
    return event_from_dict(json.loads(location.read_text(encoding="utf-8")))


@dataclass
class RecordingEventHandler(EventHandler):
    """Remembers every event it handles; raises ``error`` if one is given."""

    events: list[CloudEvent] = field(default_factory=list)
    error: Exception | None = None

    def handle(self, event: CloudEvent) -> None:
        """Record the event, then raise ``error`` if set."""
        self.events.append(event)
        if self.error is not None:
            raise self.error


@dataclass(frozen=True)
class DispatchReport:
    """Which routes ran for an event, and how each one ended."""

    outcomes: list[RouteOutcome]

    @property
    def route_names(self) -> list[str]:
        """Names of the routes that matched, in order."""
        return [o.route.name for o in self.outcomes]

    @property
    def failed(self) -> list[RouteOutcome]:
        """Outcomes whose handler raised."""
        return [o for o in self.outcomes if not o.succeeded]


def run_router(router: Router, event: ReceivedEvent | Mapping[str, Any]) -> DispatchReport:
    """Dispatch one event through every matching route, with the worker's fan-out loop, and report."""
    received = event if isinstance(event, ReceivedEvent) else event_from_dict(event)
    return DispatchReport(router.dispatch(received))
