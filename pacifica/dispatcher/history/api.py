"""What the HTTP and command-line edges of the history tools read: a JSONPath and a selection.

Both edges hand their raw input here and get typed values back, so a bad
``last`` or date reads the same everywhere.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jsonpath2.path import Path

from pacifica.dispatcher.errors import InvalidRequestError, InvalidSubscriptionError, NotFoundError
from pacifica.dispatcher.history.dryrun import (
    DEFAULT_LAST,
    DryRun,
    Selection,
    dry_run,
    recent_note,
)
from pacifica.dispatcher.subscriptions import registry

MAX_LAST = 10_000  # events one HTTP dry run may examine (the CLI has no limit)
MAX_SHOW = 200
SELECTION_KEYS = frozenset({"last", "since", "until", "event", "show"})


def parse_when(name: str, value: Any) -> datetime:
    """An ISO 8601 date or date-time (UTC when it has no zone).

    Raises:
        InvalidRequestError: it is not one.
    """
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(f"{name} must be an ISO date or date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _bounded(name: str, value: Any, high: int) -> int:
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= high:
        raise InvalidRequestError(f"{name} must be an integer 1..{high}, got {text[:40]!r}")
    return int(text)


def selection_from(params: Mapping[str, Any]) -> tuple[Selection, int]:
    """The events to examine and how many to show, from query parameters or a JSON body.

    Raises:
        InvalidRequestError: an unknown, repeated or malformed parameter (the message names it).
    """
    unknown = sorted(set(params) - SELECTION_KEYS - {"jsonpath"})
    if unknown:
        raise InvalidRequestError(f"unknown parameter {unknown[0][:100]!r}")
    if any(isinstance(v, list) for v in params.values()):
        raise InvalidRequestError("each parameter may be given once")
    show = _bounded("show", params.get("show", 20), MAX_SHOW)
    if params.get("event") is not None:
        try:
            key = uuidlib.UUID(str(params["event"]))
        except ValueError:
            raise InvalidRequestError("event must be an event's task id (a UUID)") from None
        return Selection(last=None, ids=(key,)), show
    last = _bounded("last", params.get("last", DEFAULT_LAST), MAX_LAST)
    since = parse_when("since", params["since"]) if params.get("since") else None
    until = parse_when("until", params["until"]) if params.get("until") else None
    return Selection(last, since, until), show


def user_jsonpath(text: Any) -> Path:
    """A JSONPath a user sent, held to the subscription limits (length, nesting, ``..``).

    Raises:
        InvalidSubscriptionError: it is not a string, breaks a limit or does not parse.
    """
    path = registry.compile_jsonpath(text)
    registry.check_jsonpath_limits(str(text))
    return path


def dry_run_posted(body: Any) -> DryRun:
    """``POST /eventmatch/test``: ``{"jsonpath": ..., "last"/"since"/"until"/"event"/"show"}``.

    Raises:
        InvalidRequestError: the body is not an object or a selection parameter is bad.
        InvalidSubscriptionError: the JSONPath is missing, too complex or does not parse.
    """
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object with a 'jsonpath'")
    selection, show = selection_from(body)
    return dry_run(str(body.get("jsonpath")), user_jsonpath(body.get("jsonpath")), selection, show)


def dry_run_saved(user: str, key: str, params: Mapping[str, Any]) -> DryRun:
    """``GET /eventmatch/<uuid>/test``: the caller's saved subscription's JSONPath.

    Raises:
        NotFoundError: the caller has no such subscription.
        InvalidRequestError: a selection parameter is bad.
    """
    subscription = registry.get(user, key)
    selection, show = selection_from(params)
    path = registry.compile_jsonpath(subscription.jsonpath)
    return dry_run(subscription.jsonpath, path, selection, show)


def with_recent_note(answer: dict[str, Any]) -> dict[str, Any]:
    """A subscription's create/update answer, with ``warnings`` when its JSONPath matches
    none of the recent stored events (nothing is refused)."""
    try:
        note = recent_note(registry.compile_jsonpath(answer.get("jsonpath")))
    except InvalidSubscriptionError:  # stored before validation got stricter: say nothing
        return answer
    return {**answer, "warnings": [note]} if note else answer


MAX_REPLAY_EVENTS = 10_000  # events one HTTP replay may send (the CLI has no limit)
MAX_HTTP_RATE = 100.0  # deliveries per second


@dataclass(frozen=True)
class ReplayRequest:
    """A replay's body, read: which events, at what rate, and whether only to count them."""

    selection: Selection
    jsonpath: str | None
    rate: float
    dry_run: bool


REPLAY_KEYS = frozenset({"since", "until", "jsonpath", "rate", "dry_run"})


def replay_request(body: Any, extra: frozenset[str] = frozenset()) -> ReplayRequest:
    """``{"since", "until", "jsonpath", "rate", "dry_run"}`` (and the ``extra`` keys), read.

    Raises:
        InvalidRequestError: a bad body, no ``since``, or a bad rate.
        InvalidSubscriptionError: the JSONPath is too complex or does not parse.
    """
    from pacifica.dispatcher.history import replay

    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    unknown = sorted(set(body) - REPLAY_KEYS - extra)
    if unknown:
        raise InvalidRequestError(f"unknown parameter {unknown[0][:100]!r}")
    if not body.get("since"):
        raise InvalidRequestError("since (an ISO date or date-time) is required")
    since = parse_when("since", body["since"])
    until = parse_when("until", body["until"]) if body.get("until") else None
    rate_value = body.get("rate", replay.DEFAULT_RATE)
    if isinstance(rate_value, bool) or not isinstance(rate_value, (int, float)):
        raise InvalidRequestError("rate must be a number")
    rate = replay.check_rate(float(rate_value), MAX_HTTP_RATE)
    jsonpath = body.get("jsonpath")
    if jsonpath is not None:
        user_jsonpath(jsonpath)
    dry = _flag("dry_run", body.get("dry_run", False))
    return ReplayRequest(Selection(last=None, since=since, until=until), jsonpath, rate, dry)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be true or false")
    return value


def _at_most(count: int) -> None:
    if count > MAX_REPLAY_EVENTS:
        raise InvalidRequestError(
            f"{count} events selected; at most {MAX_REPLAY_EVENTS} per request "
            "(narrow since/until, or use `pacifica-dispatcher events replay`)"
        )


def replay_posted(user: str, key: str, body: Any) -> dict[str, Any]:
    """``POST /eventmatch/<uuid>/replay``: ``{"since", "until", "jsonpath", "rate",
    "dry_run"}``; the caller's own subscription only. The answer says how many events go;
    unless it is a dry run the replay is stored, and the workers send each delivery when due.

    Raises:
        NotFoundError: the caller has no such subscription.
        InvalidRequestError: a bad body, no ``since``, a bad rate, or too many events.
        InvalidSubscriptionError: the JSONPath is too complex or does not parse.
    """
    from pacifica.dispatcher.history import replay

    subscription = registry.get(user, key)
    asked = replay_request(body)
    chosen = replay.plan(subscription, asked.selection, asked.jsonpath)
    _at_most(len(chosen.events))
    key_made = (
        None
        if asked.dry_run or not chosen.events
        else replay.start(subscription, asked.selection, chosen, user, asked.rate)
    )
    return {
        "replay": key_made,
        "subscription": str(subscription.uuid),
        "events": len(chosen.events),
        "jsonpath": chosen.jsonpath,
        "rate": asked.rate,
        "dry_run": asked.dry_run,
        "seconds": round(len(chosen.events) / asked.rate, 1),
    }


def route_replay_posted(user: str, route: str, body: Any) -> dict[str, Any]:
    """``POST /routes/<name>/replay`` (``ADMIN_USERS`` only, checked by the caller): the
    replay body plus ``only_failed`` (default true): run the route again on the selected
    events' runs of it, ``rate`` per second; a dry run only counts them.

    Raises:
        InvalidRequestError: a bad body, no ``since``, a bad rate, or too many events.
        InvalidSubscriptionError: the JSONPath is too complex or does not parse.
    """
    from pacifica.dispatcher.history import replay

    asked = replay_request(body, frozenset({"only_failed"}))
    only_failed = _flag("only_failed", body.get("only_failed", True))
    chosen = replay.plan_route(route, asked.selection, asked.jsonpath, only_failed)
    _at_most(len(chosen.events))
    key_made = None
    if not asked.dry_run and chosen.events:
        key_made, _ = replay.start_route(
            route, asked.selection, chosen, user, asked.rate, only_failed
        )
    return {
        "replay": key_made,
        "route": route,
        "only_failed": only_failed,
        "events": len(chosen.events),
        "jsonpath": chosen.jsonpath or None,
        "rate": asked.rate,
        "dry_run": asked.dry_run,
        "seconds": round(len(chosen.events) / asked.rate, 1),
    }


def replay_progress(user: str, admin: bool, key: str) -> dict[str, Any]:
    """``GET /replays/<id>``: how far a replay got, for the user who asked for it or an admin.

    Raises:
        NotFoundError: no such replay, or not the caller's (an admin sees every replay).
    """
    from pacifica.dispatcher.storage.replays import progress

    found = progress(int(key)) if key.isdigit() and len(key) < 12 else None
    if found is None or not (admin or found.user == user):
        raise NotFoundError(f"no replay {key[:40]}")
    return {
        "replay": found.replay,
        "kind": found.kind,
        "total": found.total,
        "done": found.delivered,
        "failed": found.failed,
        "pending": found.pending,
        "finished": found.done,
    }
