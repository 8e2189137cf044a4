"""The built-in subscription route: match each event, record its deliveries, send them on.

``SubscriptionRoute`` sits on the stand-alone service's router with the
JSONPath ``$``, but it matches an event only when some active subscription
does: its answer (``matches``) is the list of matching subscription ids, which
the fan-out loop hands to ``run`` with the stored event's task id. ``run``
creates one delivery per pair (idempotent: a redelivered event creates none
twice) and gives the due ones to the worker's outbox; anything not sent then
is picked up by the worker's sweeper.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pacifica.dispatcher.errors import InvalidRouteError, NotFoundError
from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.router import Route, Router, RunContext, compile_path
from pacifica.dispatcher.storage import deliveries
from pacifica.dispatcher.subscriptions.matching import DEFAULT_BUDGET, Matcher

if TYPE_CHECKING:
    from cloudevents.core.v1.event import CloudEvent  # the type handlers receive


class SubscriptionHandler(EventHandler):
    """Forwards events to the subscriptions that match them (one delivery per match)."""

    def __init__(self, matcher: Matcher | None = None) -> None:
        self.matcher = matcher or Matcher()

    def handle(self, event: CloudEvent) -> None:
        """Not used: this handler needs the stored event and its matches, see ``forward``.

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError("SubscriptionHandler runs through its SubscriptionRoute")

    def forward(self, subscriptions: list[str], context: RunContext) -> list[int]:
        """Record the deliveries of the stored event ``context.task_id`` and send the due ones.

        Returns the ids of the deliveries due now.

        Raises:
            NotFoundError: the event is not stored (it must come through the service).
        """
        if context.task_id is None:
            raise NotFoundError("the subscription route runs only for stored events")
        due = deliveries.record_matches(uuidlib.UUID(context.task_id), subscriptions)
        if due and context.send_deliveries is not None:
            context.send_deliveries(due)
        return due


@dataclass(frozen=True)
class SubscriptionRoute(Route):
    """The registry's route: it matches an event exactly when some active subscription does.

    So an event nobody subscribed to (and no other route wants) stays
    ``422 Unprocessable Entity``, and the route shows in an event's results
    only when it had deliveries to make.
    """

    event_handler: SubscriptionHandler

    def matches(self, document: Any) -> list[str]:
        """The ids of the active subscriptions whose JSONPath matches the document."""
        return self.event_handler.matcher.match(document)

    def run(self, received: ReceivedEvent, answer: Any, context: RunContext) -> None:
        """Forward the event to the subscriptions ``matches`` found."""
        del received
        self.event_handler.forward(list(answer), context)


def add_subscription_route(
    router: Router, name: str = "subscriptions", jsonpath_budget: int | None = DEFAULT_BUDGET
) -> SubscriptionRoute:
    """Append the subscription registry's route to ``router`` (projects may call this too).

    ``jsonpath_budget`` is the evaluation steps one subscription's JSONPath may
    take per event (``JSONPATH_BUDGET``); a subscription over it is disabled.

    Raises:
        InvalidRouteError: a route with this name already exists.
    """
    if any(r.name == name for r in router.routes):
        raise InvalidRouteError(router, f"{name}: a route with this name already exists")
    handler = SubscriptionHandler(Matcher(budget=jsonpath_budget))
    route = SubscriptionRoute(compile_path("$", name), handler, name)
    router.routes.append(route)
    return route
