"""Orchestration: accept events into the database, and process stored events through a router.

The database is the source of truth. ``accept_many`` commits events before
the receiver answers; ``process_many`` claims stored events, runs every
matching route through the router's one fan-out loop (skipping routes that
already succeeded, so a redelivered event does not repeat finished work) and
records the outcomes. The SQL is ``storage.events``'s.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pacifica.dispatcher import metrics
from pacifica.dispatcher.errors import NotFoundError
from pacifica.dispatcher.events import ReceivedEvent, parse_document
from pacifica.dispatcher.router import RouteOutcome, Router, RunContext
from pacifica.dispatcher.storage import EventStatus, RunStatus, utcnow, write_transaction
from pacifica.dispatcher.storage import events as stored
from pacifica.dispatcher.storage.events import NewEvent, RouteRunRow, StoredEvent
from pacifica.dispatcher.storage.values import transaction_id_of

log = logging.getLogger(__name__)
SendDeliveries = Callable[[list[int]], object]


@dataclass(frozen=True)
class Acceptance:
    """The stored record for a received event; ``created`` is False for a duplicate."""

    uuid: str
    created: bool


def accept(events: Sequence[ReceivedEvent]) -> list[Acceptance]:
    """Store events in one transaction and return their task ids (see ``accept_many``)."""
    return accept_many([events])[0]


def accept_many(groups: Sequence[Sequence[ReceivedEvent]]) -> list[list[Acceptance]]:
    """Store several requests' events in one transaction; one list of acceptances per request.

    An event whose (source, id) is already stored, or appears earlier in the
    same call, is not stored again: the original task id comes back with
    ``created=False``. New events have no ``enqueued`` time until their
    message is published.

    Raises:
        peewee.IntegrityError: another process stored one of these events at
            the same moment; calling again resolves it as a duplicate.
    """
    now = utcnow()
    with write_transaction():
        known = stored.existing_ids((e.source, e.id) for group in groups for e in group)
        rows: list[NewEvent] = []
        results = [[_accept(e, known, rows, now) for e in group] for group in groups]
        stored.insert_events(rows)
    return results


def _accept(
    received: ReceivedEvent,
    known: dict[tuple[str, str], str],
    rows: list[NewEvent],
    now: datetime,
) -> Acceptance:
    key = (received.source, received.id)
    if key in known:
        return Acceptance(known[key], created=False)
    uuid = uuidlib.uuid4()
    known[key] = str(uuid)
    rows.append(
        NewEvent(
            uuid=uuid,
            event_id=received.id,
            source=received.source,
            event_type=received.type,
            spec_version=received.specversion,
            event_time=received.time,
            content_type=received.event.get_datacontenttype(),
            document=received.document,
            created=now,
            transaction_id=transaction_id_of(received.document),
        )
    )
    return Acceptance(str(uuid), created=True)


def get_event(task_id: str) -> StoredEvent:
    """The stored event with this task id.

    Raises:
        ValueError: the id is not a UUID.
        NotFoundError: no event has this id.
    """
    found = stored.get_event(uuidlib.UUID(str(task_id)))
    if found is None:
        raise NotFoundError(f"no task with id {task_id}")
    return found


def process(
    task_id: str, router: Router, send_deliveries: SendDeliveries | None = None
) -> EventStatus:
    """Run every matching route of one stored event and record the outcome (see ``process_many``).

    Raises:
        NotFoundError: no event has this id.
        ValueError: the id is not a UUID.
    """
    done = process_many([task_id], router, send_deliveries=send_deliveries)
    if done.missing:
        raise NotFoundError(f"no task with id {task_id}")
    return done.statuses[str(uuidlib.UUID(str(task_id)))]


@dataclass
class Processed:
    """What ``process_many`` did with the events it was given, by task id."""

    statuses: dict[str, EventStatus] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    handed_back: list[str] = field(default_factory=list)


def process_many(
    task_ids: Sequence[str],
    router: Router,
    time_limit: float | None = None,
    claimant: str | None = None,
    lease: float = 0.0,
    send_deliveries: SendDeliveries | None = None,
    holder: str | None = None,
) -> Processed:
    """Run every matching route of each stored event, in order, and record the outcomes.

    Three transactions however many events: one statement claims and reads
    them all (``102 Processing``), the routes run, and one transaction records
    every route's run and final status. An event already final (200/422/500)
    is left alone, so a duplicate message is a no-op; a route that succeeded
    on an earlier attempt is not run again.

    ``claimant`` names the broker message. An event another message holds in
    ``102 Processing`` for less than ``lease`` seconds is skipped (reported as
    processing), so two copies of a message never run its handlers at once;
    the same message redelivered after a crash takes its events back. Once
    ``time_limit`` seconds have passed, the events not yet started go back to
    ``202 Accepted`` and are listed in ``handed_back`` for the caller to send on.

    An event that cannot be read, parsed or matched fails alone, with the
    reason recorded as the run of the pseudo-route ``(dispatch)``; the other
    events of the message go on. ``holder`` names the worker (heartbeats).

    Raises:
        ValueError: an id is not a UUID.
    """
    started = time.monotonic()
    keys = [uuidlib.UUID(str(t)) for t in task_ids]
    done = Processed()
    claimed, others, unreadable = stored.claim_events(keys, claimant, lease, holder)
    _note_unclaimed(keys, claimed, {**others, **dict.fromkeys(unreadable)}, done)
    previous = stored.previous_runs([e.uuid for e in claimed if e.attempts > 1])
    runs = [_failure_row(key, reason) for key, reason in unreadable.items()]
    finished: dict[EventStatus, list[uuidlib.UUID]] = (
        {EventStatus.FAILED: list(unreadable)} if unreadable else {}
    )
    for key in unreadable:
        done.statuses[str(key)] = EventStatus.FAILED
    for position, event in enumerate(claimed):
        if position and time_limit is not None and time.monotonic() - started > time_limit:
            done.handed_back = [str(e.uuid) for e in claimed[position:]]
            break
        before = previous.get(event.uuid, {})
        replayed = {r for r, s in before.items() if s is RunStatus.REPLAY}
        if replayed:  # a route replay: run only those routes; the others keep their outcome
            succeeded = {route.name for route in router.routes} - replayed
        else:
            succeeded = {r for r, s in before.items() if s is RunStatus.SUCCEEDED}
        context = RunContext(str(event.uuid), send_deliveries)
        status = _run_routes(event, router, succeeded, context, runs)
        if replayed and any(s is RunStatus.FAILED for r, s in before.items() if r not in replayed):
            status = EventStatus.FAILED
        finished.setdefault(status, []).append(event.uuid)
        done.statuses[str(event.uuid)] = status
    first_attempts = {e.uuid for e in claimed if e.attempts == 1}  # unreadable: upserted
    handed_back = [uuidlib.UUID(t) for t in done.handed_back]
    stored.record_outcomes(first_attempts, runs, finished, handed_back)
    metrics.count_finished({int(s): len(keys) for s, keys in finished.items() if s.final})
    metrics.observe_route_runs((r.route, int(r.status), r.started, r.finished) for r in runs)
    return done


def _note_unclaimed(
    keys: list[uuidlib.UUID],
    claimed: list[StoredEvent],
    others: dict[uuidlib.UUID, StoredEvent | None],
    done: Processed,
) -> None:
    """Report the events this message did not claim: final, held by another message, or gone.

    ``others`` maps the events found but not claimed (None: claimed but unreadable).
    """
    taken = {e.uuid for e in claimed}
    for key in dict.fromkeys(keys):
        if key in taken:
            continue
        if key not in others:
            done.missing.append(str(key))
            continue
        event = others[key]
        if event is None:
            continue
        done.statuses[str(key)] = event.status
        if event.status is EventStatus.PROCESSING:
            log.info("event %s is being processed by message %s; skipped", key, event.claimed_by)


def _run_routes(
    event: StoredEvent,
    router: Router,
    succeeded: set[str],
    context: RunContext,
    runs: list[RouteRunRow],
) -> EventStatus:
    """Run an event's matching routes (skipping ones that already succeeded); its final status."""
    try:
        received = parse_document(event.document)
        outcomes = router.dispatch(received, skip=succeeded, context=context)
    except Exception as exc:  # parsing or matching this event failed: it fails alone
        log.warning("event %s cannot be routed: %r", event.uuid, exc)
        runs.append(_failure_row(event.uuid, f"{type(exc).__name__}: {exc}"))
        return EventStatus.FAILED
    runs.extend(_run_row(event.uuid, o) for o in outcomes if not o.skipped)
    if not outcomes:
        return EventStatus.UNROUTED
    return EventStatus.SUCCEEDED if all(o.succeeded for o in outcomes) else EventStatus.FAILED


def _run_row(key: uuidlib.UUID, outcome: RouteOutcome) -> RouteRunRow:
    """A route's outcome as the row recorded for it."""
    error = outcome.error
    route = outcome.route
    if error is not None:
        log.warning("route %s failed for event %s: %r", route.name, key, error)
    handler = type(route.event_handler)
    finished = outcome.finished or utcnow()
    return RouteRunRow(
        event=key,
        route=route.name,
        handler=f"{handler.__module__}.{handler.__qualname__}",
        status=RunStatus.SUCCEEDED if error is None else RunStatus.FAILED,
        exc_type=None if error is None else type(error).__name__,
        exc_message=None if error is None else str(error),
        exc_traceback=outcome.traceback or None,
        attempts=1,
        started=outcome.started or finished,
        finished=finished,
        updated=finished,
        report=outcome.report,
    )


DISPATCH_ROUTE = "(dispatch)"  # the pseudo-route under which an unroutable event's reason is kept


def _failure_row(key: uuidlib.UUID, reason: str) -> RouteRunRow:
    """The run recorded for an event that could not be read, parsed or matched."""
    now = utcnow()
    kind, _, message = reason.partition(": ")
    return RouteRunRow(
        event=key,
        route=DISPATCH_ROUTE,
        handler=__name__,
        status=RunStatus.FAILED,
        exc_type=kind,
        exc_message=message or kind,
        exc_traceback=None,
        attempts=1,
        started=now,
        finished=now,
        updated=now,
    )


def reset_for_retry(task_ids: Iterable[str]) -> list[str]:
    """Put events back to ``202 Accepted`` so they run again; routes that succeeded stay done.

    Raises:
        NotFoundError: an id does not exist.
        ValueError: an id is not a UUID.
    """
    found = [get_event(t) for t in task_ids]
    stored.reset_for_retry([e.uuid for e in found])
    return [str(e.uuid) for e in found]
