"""The built-in subscription handler: match each event, record its deliveries, send them on.

``SubscriptionHandler`` sits on the stand-alone service's router with the
JSONPath ``$`` (every event). For each event it asks the ``Matcher`` which
active subscriptions match, creates one delivery per pair (idempotent: a
redelivered event creates none twice) and hands the due ones to ``send``,
which the worker binds to its delivery task. Anything ``send`` does not take
is picked up by the worker's sweeper.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from jsonpath2.path import Path

from pacifica.dispatcher import delivery_log
from pacifica.dispatcher.errors import InvalidRouteError, InvalidSubscriptionError, NotFoundError
from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.matching import MatchIndex
from pacifica.dispatcher.router import Route, Router, compile_path
from pacifica.dispatcher.storage import EventRecord, Subscription, subscription_revision
from pacifica.dispatcher.subscriptions import compile_jsonpath

log = logging.getLogger(__name__)
Send = Callable[[list[int]], object]


def _compile_stored(sub: Subscription) -> Path | None:
    try:
        return compile_jsonpath(sub.jsonpath)
    except InvalidSubscriptionError:  # stored before validation got stricter: skip, do not crash
        log.warning("subscription %s has an invalid JSONPath; it matches nothing", sub.uuid)
        return None


@dataclass
class Matcher:
    """Matches event documents against the active subscriptions, reloading when they change.

    One cheap query per event reads the revision counter; the index is rebuilt
    only when it moved, and JSONPaths already compiled are reused.
    """

    revision: int | None = None
    index: MatchIndex = field(default_factory=MatchIndex)
    compiled: dict[str, Path] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refresh(self) -> None:
        """Rebuild the index if subscriptions changed since the last call."""
        revision = subscription_revision()
        if revision == self.revision:
            return
        active = Subscription.select(Subscription.uuid, Subscription.jsonpath).where(
            Subscription.deleted.is_null() & Subscription.disabled.is_null()
        )
        entries, compiled = [], {}
        for sub in active:
            path = self.compiled.get(sub.jsonpath) or _compile_stored(sub)
            if path is not None:
                compiled[sub.jsonpath] = path
                entries.append((str(sub.uuid), path))
        with self.lock:
            self.index, self.compiled, self.revision = MatchIndex.build(entries), compiled, revision

    def match(self, document: Any) -> list[str]:
        """The ids of the active subscriptions whose JSONPath matches ``document``."""
        self.refresh()
        return self.index.match(document)


class SubscriptionHandler(EventHandler):
    """Matches events to subscriptions and queues one delivery per match."""

    def __init__(self, matcher: Matcher | None = None, send: Send | None = None) -> None:
        self.matcher = matcher or Matcher()
        self.send = send
        # The route has just matched this document to decide whether to run:
        # the handler takes that answer instead of matching it a second time.
        self._matched: tuple[Any, list[str]] | None = None

    def matches(self, document: Any) -> list[str]:
        """The subscriptions matching ``document``, remembered for the ``handle_received`` next."""
        found = self.matcher.match(document)
        self._matched = (document, found)
        return found

    def _take_matches(self, document: Any) -> list[str]:
        remembered, self._matched = self._matched, None
        if remembered is not None and remembered[0] is document:
            return remembered[1]
        return self.matcher.match(document)

    def handle(self, event: CloudEvent) -> None:
        """Not used: this handler needs the stored record, see ``handle_received``.

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError("SubscriptionHandler runs through handle_received")

    def handle_received(self, received: ReceivedEvent) -> None:
        """Create the event's deliveries and send the due ones to the delivery task.

        Raises:
            NotFoundError: the event is not stored (it must come through ``dispatch.process``).
        """
        record = EventRecord.get_or_none(
            (EventRecord.source == received.source) & (EventRecord.event_id == received.id)
        )
        if record is None:
            raise NotFoundError(f"event {received.source} {received.id} is not stored")
        due = delivery_log.record_matches(record.uuid, self._take_matches(received.document))
        if due and self.send is not None:
            self.send(due)


@dataclass(frozen=True)
class SubscriptionRoute(Route):
    """The registry's route: it matches an event exactly when some active subscription does.

    So an event nobody subscribed to (and no other route wants) stays
    ``422 Unprocessable Entity``, and the route shows in an event's results
    only when it had deliveries to make.
    """

    def match(self, document: Any) -> bool:
        """True when at least one active subscription's JSONPath matches the document."""
        handler = self.event_handler
        return isinstance(handler, SubscriptionHandler) and bool(handler.matches(document))


def add_subscription_route(router: Router, name: str = "subscriptions") -> SubscriptionRoute:
    """Append the subscription registry's route to ``router`` (projects may call this too).

    Raises:
        InvalidRouteError: a route with this name already exists.
    """
    if any(r.name == name for r in router.routes):
        raise InvalidRouteError(router, f"{name}: a route with this name already exists")
    route = SubscriptionRoute(compile_path("$", name), SubscriptionHandler(), name)
    router.routes.append(route)
    return route
