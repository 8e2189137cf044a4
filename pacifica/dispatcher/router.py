"""Routes map JSONPaths to event handlers; a router matches an event against them in order.

The upstream API is kept (``add_route``, ``match``, ``match_first_or_raise``,
calling the router runs the first match) and fan-out is added: ``dispatch``
runs every matching route and reports each one's outcome on its own. It is
the one fan-out loop: the worker, the CLI and ``testing.run_router`` all use
it. ``parse_jsonpath`` is the one JSONPath compiler and ``path_matches`` the
one match predicate (the subscription registry uses them too).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path as FilePath
from typing import Any, TypeAlias

from jsonpath2.path import Path

from pacifica.dispatcher.errors import (
    InvalidRouteError,
    NoRouteError,
    RouteNotFoundRouterError,
    RouterError,
)
from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.events import ReceivedEvent, parse_document
from pacifica.dispatcher.predicate import interpret, predicate_of

PathSpec: TypeAlias = "Path | str | os.PathLike[str]"
# The errors are here too: upstream code imports them from this module.
__all__ = [
    "PathSpec",
    "Route",
    "RouteNotFoundRouterError",
    "RouteOutcome",
    "Router",
    "RouterError",
    "RunContext",
    "compile_path",
    "current_run",
    "parse_jsonpath",
    "path_matches",
    "run_route",
]


def parse_jsonpath(text: str) -> Path:
    """Compile JSONPath text; routes and subscriptions both come through here.

    Raises:
        ValueError: it does not parse (the message is the parser's).
    """
    try:
        return Path.parse_str(text.strip())
    except Exception as exc:  # jsonpath2/ANTLR raise ValueError and friends
        raise ValueError(str(exc) or type(exc).__name__) from exc


def path_matches(path: Path, document: Any) -> bool:
    """True when ``path`` matches ``document`` at least once (upstream's ``find`` is not empty).

    The path's compiled predicate answers when it has one, jsonpath2 otherwise (the same
    answer, and the same exceptions, either way).
    """
    predicate = predicate_of(path)
    return interpret(path, document) if predicate is None else predicate(document)


@dataclass(frozen=True)
class RunContext:
    """What the service tells a route besides the event: the stored event's task id, and
    where deliveries go (the worker's outbox; None outside a worker)."""

    task_id: str | None = None
    send_deliveries: Callable[[list[int]], object] | None = None


@dataclass(frozen=True)
class Route:
    """A compiled JSONPath and the handler to run for events it matches.

    ``name`` identifies the route in stored results; it must stay the same
    across restarts for a re-delivered event to skip routes that already ran.
    """

    path: Path
    event_handler: EventHandler
    name: str = ""

    def matches(self, document: Any) -> Any:
        """The route's answer for a document: truthy when it should run, handed to ``run``."""
        return path_matches(self.path, document)

    def match(self, document: Any) -> bool:
        """True when the JSONPath matches the event document at least once."""
        return bool(self.matches(document))

    def run(self, received: ReceivedEvent, answer: Any, context: RunContext) -> str | None:
        """Run the handler for an event this route matched (``answer`` is ``matches``'s);
        return what it reported (recorded with the run), if anything."""
        del answer, context
        return self.event_handler.handle_received(received)

    def __call__(self, event: ReceivedEvent | Mapping[str, Any]) -> None:
        """Run the handler on the event (a ``ReceivedEvent`` or an event document)."""
        received = event if isinstance(event, ReceivedEvent) else parse_document(dict(event))
        self.run(received, self.matches(received.document), RunContext())


@dataclass(frozen=True)
class RouteOutcome:
    """What happened when one route ran: ``error`` is None on success."""

    route: Route
    error: BaseException | None = None
    traceback: str = ""
    skipped: bool = False  # matched, but it succeeded on an earlier attempt
    started: datetime | None = None
    finished: datetime | None = None
    report: str | None = None  # what a successful handler reported (``handle_received``)

    @property
    def succeeded(self) -> bool:
        """True when the handler returned without raising."""
        return self.error is None


@dataclass(frozen=True)
class RunningRoute:
    """The route running in this thread (``current_run``): what an upload records as lineage."""

    route: str
    handler: EventHandler
    event: ReceivedEvent
    task_id: str | None


current_run: ContextVar[RunningRoute | None] = ContextVar("current_run", default=None)


def run_route(
    route: Route, event: ReceivedEvent, answer: Any = True, context: RunContext | None = None
) -> RouteOutcome:
    """Run one route, capturing any exception with its formatted traceback."""
    started = datetime.now(timezone.utc)
    context = context or RunContext()
    token = current_run.set(RunningRoute(route.name, route.event_handler, event, context.task_id))
    try:
        report = route.run(event, answer, context)
    except Exception as exc:  # a handler's failure is recorded, never propagated
        finished = datetime.now(timezone.utc)
        return RouteOutcome(route, exc, traceback.format_exc(), started=started, finished=finished)
    finally:
        current_run.reset(token)
    finished = datetime.now(timezone.utc)
    shown = report if isinstance(report, str) else None
    return RouteOutcome(route, started=started, finished=finished, report=shown)


def compile_path(spec: PathSpec, route_name: str = "route") -> Path:
    """Turn a jsonpath2 ``Path``, a JSONPath string or a file holding one into a ``Path``.

    A string is a JSONPath when it starts with ``$``; otherwise it names a file.

    Raises:
        InvalidRouteError: the JSONPath does not parse, or the file cannot be read.
    """
    if isinstance(spec, Path):
        return spec
    text, origin = _path_text(spec, route_name)
    try:
        return parse_jsonpath(text)
    except ValueError as exc:
        raise InvalidRouteError(None, f"{route_name}: invalid JSONPath{origin}: {exc}") from exc


def _path_text(spec: str | os.PathLike[str], route_name: str) -> tuple[str, str]:
    if isinstance(spec, str) and spec.lstrip().startswith("$"):
        return spec, f" {spec!r}"
    try:
        return FilePath(spec).read_text(encoding="utf-8"), f" in {os.fspath(spec)}"
    except OSError as exc:
        if isinstance(spec, str) and not os.path.exists(spec):
            return spec, f" {spec!r}"  # not a file: let the parser say what is wrong
        raise InvalidRouteError(None, f"{route_name}: cannot read JSONPath file: {exc}") from exc


@dataclass
class Router:
    """An ordered list of routes."""

    routes: list[Route] = field(default_factory=list)

    def add_route(
        self, path: PathSpec, event_handler: EventHandler, name: str | None = None
    ) -> Route:
        """Compile ``path`` once and append a route to ``event_handler``.

        Raises:
            InvalidRouteError: the JSONPath is invalid, or the name is already taken.
        """
        route_name = name or self._default_name(event_handler)
        if any(r.name == route_name for r in self.routes):
            raise InvalidRouteError(self, f"{route_name}: a route with this name already exists")
        try:
            compiled = compile_path(path, route_name)
        except InvalidRouteError as exc:
            raise InvalidRouteError(self, str(exc)) from exc
        route = Route(compiled, event_handler, route_name)
        self.routes.append(route)
        return route

    def _default_name(self, handler: EventHandler) -> str:
        base = type(handler).__name__
        taken = {r.name for r in self.routes}
        if base not in taken:
            return base
        return next(f"{base}-{n}" for n in range(2, len(taken) + 3) if f"{base}-{n}" not in taken)

    def match(self, document: Any) -> Iterator[Route]:
        """Every route whose JSONPath matches the document, in insertion order."""
        return (route for route in self.routes if route.match(document))

    def match_first_or_raise(self, document: Any) -> Route:
        """The first matching route.

        Raises:
            NoRouteError: no route matches.
        """
        for route in self.match(document):
            return route
        raise NoRouteError(self, document)

    def dispatch(
        self,
        event: ReceivedEvent,
        skip: Collection[str] = (),
        context: RunContext | None = None,
    ) -> list[RouteOutcome]:
        """Run every matching route in order; one route's failure does not stop the others.

        Routes named in ``skip`` (they succeeded on an earlier attempt) match
        but do not run: their outcome says ``skipped``.
        """
        outcomes = []
        for route in self.routes:
            answer = route.matches(event.document)
            if not answer:
                continue
            if route.name in skip:
                outcomes.append(RouteOutcome(route, skipped=True))
            else:
                outcomes.append(run_route(route, event, answer, context))
        return outcomes

    def __call__(self, document: Any) -> None:
        """Run the first matching route (upstream behaviour).

        Raises:
            NoRouteError: no route matches.
        """
        self.match_first_or_raise(document)(document)

    def __len__(self) -> int:
        return len(self.routes)
