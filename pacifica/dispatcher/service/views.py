"""The JSON shapes users already rely on: upstream's task summary and task object, and deliveries."""

from __future__ import annotations

import json
from typing import Any

from pacifica.dispatcher.storage import EventStatus, RunStatus, iso
from pacifica.dispatcher.storage import deliveries as stored_deliveries
from pacifica.dispatcher.storage import events as stored_events
from pacifica.dispatcher.storage.events import RouteRunRow, StoredEvent

TASK_NAME = "pacifica.dispatcher.process"  # the Celery task that processes events


def summarize(event: StoredEvent) -> dict[str, Any]:
    """The short form of an event in listings: ``{taskID, taskStatus, created, updated, deleted}``."""
    return {
        "taskID": str(event.uuid),
        "taskStatus": event.status.http,
        "eventType": event.event_type,
        "created": iso(event.created),
        "updated": iso(event.updated),
        "deleted": iso(event.deleted),
    }


def describe(event: StoredEvent) -> dict[str, Any]:
    """The upstream ``GET /get/<task_id>`` object, plus every route's result."""
    runs = stored_events.route_runs(event.uuid)
    failed = next((r for r in runs if r.status is RunStatus.FAILED), None)
    exception = (failed.exc_type, failed.exc_message, failed.exc_traceback) if failed else None
    if event.status is EventStatus.UNROUTED:
        exception = ("RouteNotFoundRouterError", "route not found", None)
    document = event.document
    return {
        "eventType": event.event_type,
        "eventTypeVersion": document.get("eventTypeVersion"),
        "source": event.source,
        "eventID": event.event_id,
        "eventTime": iso(event.event_time),
        "schemaURL": document.get("schemaURL", document.get("dataschema")),
        "contentType": event.content_type,
        "specVersion": event.spec_version,
        "eventData": json.dumps(document, ensure_ascii=False),
        "data": json.dumps(document.get("data"), ensure_ascii=False),
        "taskID": str(event.uuid),
        "taskStatus": event.status.http,
        "taskApplicationName": "pacifica.dispatcher",
        "taskName": TASK_NAME,
        "exceptionType": exception[0] if exception else None,
        "exceptionValue": exception[1] if exception else None,
        "exceptionTraceback": exception[2] if exception else None,
        "attempts": event.attempts,
        "created": iso(event.created),
        "updated": iso(event.updated),
        "deleted": iso(event.deleted),
        "routes": [_describe_run(r) for r in runs],
    }


def _describe_run(run: RouteRunRow) -> dict[str, Any]:
    return {
        "route": run.route,
        "handler": run.handler,
        "status": run.status.name,
        "attempts": run.attempts,
        "exceptionType": run.exc_type,
        "exceptionValue": run.exc_message,
        "exceptionTraceback": run.exc_traceback,
        "report": run.report,
        "started": iso(run.started),
        "finished": iso(run.finished),
    }


def describe_deliveries(event: StoredEvent) -> list[dict[str, Any]]:
    """Every delivery of an event with its logged requests, for ``events get``."""
    return [
        {
            "subscription": str(row.subscription),
            "status": row.status.name,
            "policy": row.policy_status,
            "target": row.target_status,
            "attempts": row.attempts,
            "nextAttempt": iso(row.next_attempt),
            "error": row.error,
            "created": iso(row.created),
            "log": [
                {
                    "number": a.number,
                    "kind": a.kind,
                    "status": a.status_code,
                    "error": a.error,
                    "duration": round(a.duration, 4),
                    "time": iso(a.created),
                }
                for a in row.requests
            ],
        }
        for row in stored_deliveries.deliveries_of(event.uuid)
    ]
