"""Replays: stored events sent again to one subscription, throttled, resumable, marked as replays.

``plan`` selects the events (a time range, and a JSONPath: the subscription's
own unless another is given) and says how many would go; ``start`` stores the
replay and one delivery per event, scheduled ``rate`` per second (see
``storage.replays``); ``pump`` publishes each delivery through the
deliveries' outbox when it is due and reports progress. Nothing lives only in
the pump: if it stops, every worker's outbox sweep sends the deliveries that
are overdue, in schedule order, so a replay always finishes.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from jsonpath2.path import Path

from pacifica.dispatcher.errors import InvalidRequestError
from pacifica.dispatcher.history.dryrun import Selection, safe_matches
from pacifica.dispatcher.service.outbox import Outbox
from pacifica.dispatcher.storage import replays
from pacifica.dispatcher.storage.history import event_documents
from pacifica.dispatcher.storage.replays import NewReplay, ReplayProgress
from pacifica.dispatcher.storage.subscriptions import SubscriptionRow
from pacifica.dispatcher.subscriptions.registry import compile_jsonpath

DEFAULT_RATE = 10.0  # deliveries per second
TICK = 0.1  # seconds between the pump's looks at what is due


@dataclass(frozen=True)
class Plan:
    """The events a replay would send, oldest first, and the JSONPath that chose them."""

    events: list[uuidlib.UUID]
    jsonpath: str


def check_rate(rate: float, highest: float) -> float:
    """A replay rate: more than 0, at most ``highest`` per second.

    Raises:
        InvalidRequestError: it is not.
    """
    if not 0 < rate <= highest:
        raise InvalidRequestError(f"rate must be more than 0 and at most {highest:g} per second")
    return rate


def plan(subscription: SubscriptionRow, selection: Selection, jsonpath: str | None) -> Plan:
    """The stored events a replay to ``subscription`` would send: those in ``selection`` that
    ``jsonpath`` (by default the subscription's own) matches.

    Raises:
        InvalidSubscriptionError: the JSONPath does not parse.
    """
    text = jsonpath or subscription.jsonpath
    path: Path = compile_jsonpath(text)
    found = event_documents(selection.last, selection.since, selection.until, selection.ids)
    chosen = [d.uuid for d in reversed(found) if safe_matches(path, d.document)]
    return Plan(chosen, text)


def start(
    subscription: SubscriptionRow, selection: Selection, chosen: Plan, user: str, rate: float
) -> int:
    """Store the replay and its scheduled deliveries; return the replay's id."""
    asked = NewReplay(
        "subscription",
        user,
        rate,
        subscription=subscription.uuid,
        jsonpath=chosen.jsonpath,
        since=selection.since,
        until=selection.until,
    )
    return replays.create_delivery_replay(asked, chosen.events)


def pump(
    replay: int,
    outbox: Outbox[int],
    show: Callable[[ReplayProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> ReplayProgress:
    """Publish the replay's deliveries as they fall due until none is pending (or ``stop``)."""
    stop = stop or threading.Event()
    while True:
        due = replays.claim_due(replay)
        if due:
            outbox.send(due)
        now = replays.progress(replay)
        if show is not None:
            show(now)
        if now.done or stop.wait(TICK):  # the pump's own pace: it is the throttle
            return now


def describe(progress: ReplayProgress) -> str:
    """``replay 3: 420/1000 delivered, 0 failed, 580 pending``."""
    return (
        f"replay {progress.replay}: {progress.delivered}/{progress.total} delivered, "
        f"{progress.failed} failed, {progress.pending} pending"
    )


def plan_route(route: str, selection: Selection, jsonpath: str | None, only_failed: bool) -> Plan:
    """The stored events whose run of ``route`` a route replay would repeat: in ``selection``,
    matched by ``jsonpath`` (if given), with a failed run of the route (or any run).

    Raises:
        InvalidSubscriptionError: the JSONPath does not parse.
    """
    path = compile_jsonpath(jsonpath) if jsonpath else None
    found = event_documents(selection.last, selection.since, selection.until, selection.ids)
    candidates = [d.uuid for d in reversed(found) if path is None or safe_matches(path, d.document)]
    repeatable = replays.with_route_runs(route, candidates, only_failed)
    chosen = [key for key in candidates if key in repeatable]
    return Plan(chosen, jsonpath or "")


def start_route(
    route: str, selection: Selection, chosen: Plan, user: str, rate: float, only_failed: bool
) -> tuple[int, list[uuidlib.UUID]]:
    """Mark the route's runs to run again; the replay's id and the events to send."""
    asked = NewReplay(
        "route",
        user,
        rate,
        route=route,
        jsonpath=chosen.jsonpath or None,
        since=selection.since,
        until=selection.until,
    )
    return replays.mark_route_replay(asked, chosen.events, only_failed)


def send_paced(
    keys: list[uuidlib.UUID],
    outbox: Outbox[str],
    rate: float,
    show: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Publish events to the events' outbox at ``rate`` per second; how many were sent.

    Events left unsent (this process stopped) are ``202 Accepted`` in the database: the
    workers' sweep sends them after ``REQUEUE_AFTER``, unpaced.
    """
    stop = stop or threading.Event()
    started, sent = time.monotonic(), 0
    while sent < len(keys):
        due = min(len(keys), int((time.monotonic() - started) * rate) + 1)
        if due > sent:
            outbox.send([str(k) for k in keys[sent:due]])  # what the broker refused: swept later
            sent = due
            if show is not None:
                show(sent, len(keys))
        if sent < len(keys) and stop.wait(TICK):
            break
    return sent
