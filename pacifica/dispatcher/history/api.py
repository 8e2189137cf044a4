"""What the HTTP and command-line edges of the history tools read: a JSONPath and a selection.

Both edges hand their raw input here and get typed values back, so a bad
``last`` or date reads the same everywhere.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from jsonpath2.path import Path

from pacifica.dispatcher.errors import InvalidRequestError, InvalidSubscriptionError
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

    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    unknown = sorted(set(body) - {"since", "until", "jsonpath", "rate", "dry_run"})
    if unknown:
        raise InvalidRequestError(f"unknown parameter {unknown[0][:100]!r}")
    subscription = registry.get(user, key)
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
    selection = Selection(last=None, since=since, until=until)
    chosen = replay.plan(subscription, selection, jsonpath)
    if len(chosen.events) > MAX_REPLAY_EVENTS:
        raise InvalidRequestError(
            f"{len(chosen.events)} events selected; at most {MAX_REPLAY_EVENTS} per request "
            "(narrow since/until, or use `pacifica-dispatcher events replay`)"
        )
    dry = bool(body.get("dry_run", False))
    key_made = (
        None
        if dry or not chosen.events
        else replay.start(subscription, selection, chosen, user, rate)
    )
    return {
        "replay": key_made,
        "subscription": str(subscription.uuid),
        "events": len(chosen.events),
        "jsonpath": chosen.jsonpath,
        "rate": rate,
        "dry_run": dry,
        "seconds": round(len(chosen.events) / rate, 1),
    }
