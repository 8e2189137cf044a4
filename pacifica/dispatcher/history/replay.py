"""Replays: stored events sent again to one subscription, or one route run again on them;
throttled, resumable, marked as replays.

``plan`` (``plan_route``) selects the events (a time range, and a JSONPath:
the subscription's own unless another is given) and says how many would go;
``start`` (``start_route``) stores the replay and its schedule, ``rate`` per
second (see ``storage.replays``); ``publish_due`` takes a turn and publishes
what is due (``storage.pacing``); ``pump`` does so until the replay is done
and reports progress. Nothing lives only in the pump: every worker's
housekeeping publishes the replays' due messages too, so a replay always
finishes, and after a crash it goes on at its rate.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jsonpath2.path import Path

from pacifica.dispatcher.errors import InvalidRequestError, NotFoundError
from pacifica.dispatcher.history.dryrun import Selection, safe_matches
from pacifica.dispatcher.service.outbox import Outbox
from pacifica.dispatcher.storage import pacing, replays
from pacifica.dispatcher.storage.history import EventDocument, event_documents
from pacifica.dispatcher.storage.replays import NewReplay, ReplayProgress
from pacifica.dispatcher.storage.statements import SWEEP_BATCH
from pacifica.dispatcher.storage.subscriptions import SubscriptionRow
from pacifica.dispatcher.subscriptions.registry import compile_jsonpath

DEFAULT_RATE = 10.0  # deliveries per second
TICK = 0.1  # seconds between the pump's looks at what is due
PROGRESS_EVERY = 1.0  # seconds between the pump's progress reports


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
    chosen = [d.uuid for d in oldest_first(selection) if safe_matches(path, d.document)]
    return Plan(chosen, text)


def oldest_first(selection: Selection) -> Iterator[EventDocument]:
    """The selected stored events, oldest first, a page at a time (only ids are kept)."""
    if selection.last is not None:  # the last N: newest first from the database, at most N
        yield from reversed(
            list(event_documents(selection.last, selection.since, selection.until, selection.ids))
        )
        return
    yield from event_documents(
        None, selection.since, selection.until, selection.ids, oldest_first=True
    )


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


@dataclass(frozen=True)
class Publishers:
    """The outboxes a replay publishes through: events (route replays), deliveries."""

    events: Outbox[str]
    deliveries: Outbox[int]


def publish_due(replay: int, through: Publishers) -> bool:
    """Take a turn on ``replay`` and publish what is due; False once it has nothing left.

    A turn another publisher holds publishes nothing here (True: not finished).
    """
    turn = pacing.take_turn(replay)
    if turn is None:
        return replay in pacing.active()
    while True:
        if turn.kind == "route":
            batch: list[Any] = pacing.claim_runs(turn)
            through.events.send(batch)  # what the broker refused: the events' sweep sends it
        else:
            batch = pacing.claim_deliveries(turn)
            through.deliveries.send(batch)
        if len(batch) < SWEEP_BATCH:
            break
    return not pacing.finish_if_done(turn)


def publish_all_due(through: Publishers) -> bool:
    """Publish what is due of every replay (a worker's turn); whether any is still going."""
    going = False
    for replay in pacing.active():
        going = publish_due(replay, through) or going
    return going


def pump(
    replay: int,
    through: Publishers,
    show: Callable[[ReplayProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> ReplayProgress:
    """Publish the replay's messages as they fall due until all ran (or ``stop``)."""
    stop = stop or threading.Event()
    looked = 0.0
    found: ReplayProgress | None = None
    while True:
        publishing = publish_due(replay, through)
        now = time.monotonic()
        if not publishing or now - looked >= PROGRESS_EVERY:
            looked = now
            found = replays.progress(replay)
            if found is None:  # deleted under the pump
                raise NotFoundError(f"no replay {replay}")
            if show is not None:
                show(found)
            if found.done:
                return found
        if stop.wait(TICK) and found is not None:  # the schedule in the database is the throttle
            return found


def describe(progress: ReplayProgress) -> str:
    """``replay 3: 420/1000 delivered, 0 failed, 580 pending`` (a route replay: ``ran``)."""
    done = "ran" if progress.kind == "route" else "delivered"
    return (
        f"replay {progress.replay}: {progress.delivered}/{progress.total} {done}, "
        f"{progress.failed} failed, {progress.pending} pending"
    )


def plan_route(route: str, selection: Selection, jsonpath: str | None, only_failed: bool) -> Plan:
    """The stored events whose run of ``route`` a route replay would repeat: in ``selection``,
    matched by ``jsonpath`` (if given), with a failed run of the route (or any run).

    Raises:
        InvalidSubscriptionError: the JSONPath does not parse.
    """
    path = compile_jsonpath(jsonpath) if jsonpath else None
    chosen: list[uuidlib.UUID] = []
    page: list[uuidlib.UUID] = []
    for document in oldest_first(selection):
        if path is None or safe_matches(path, document.document):
            page.append(document.uuid)
        if len(page) >= SWEEP_BATCH:
            chosen += _with_runs(route, page, only_failed)
            page = []
    chosen += _with_runs(route, page, only_failed)
    return Plan(chosen, jsonpath or "")


def _with_runs(route: str, candidates: list[uuidlib.UUID], only_failed: bool) -> list[uuidlib.UUID]:
    repeatable = replays.with_route_runs(route, candidates, only_failed)
    return [key for key in candidates if key in repeatable]


def start_route(
    route: str, selection: Selection, chosen: Plan, user: str, rate: float, only_failed: bool
) -> tuple[int, list[uuidlib.UUID]]:
    """Mark the route's runs to run again and schedule their events ``rate`` per second; the
    replay's id and the events."""
    asked = NewReplay(
        "route",
        user,
        rate,
        route=route,
        jsonpath=chosen.jsonpath or None,
        since=selection.since,
        until=selection.until,
    )
    return replays.create_route_replay(asked, chosen.events, only_failed)
