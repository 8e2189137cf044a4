"""The OpenAPI 3.1 document of the whole HTTP API, served at ``/openapi.json``.

The tests validate it with openapi-spec-validator and check every response
the API tests receive against it (``tests/openapi_check.py``), so it cannot
drift from the code.
"""

from __future__ import annotations

from typing import Any

from pacifica.dispatcher.metrics import CONTENT_TYPE as METRICS_TYPE

JSON = "application/json"
HTML = "text/html"
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TEXT = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    """Every listed status answers the one error shape (``http.ERROR_STATUS``)."""
    found = {str(c): {"$ref": "#/components/responses/Error"} for c in codes}
    return {**found, "default": {"$ref": "#/components/responses/Error"}}


def _task_id(name: str = "task_id") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _user_header() -> dict[str, Any]:
    return {
        "name": "Http-Remote-User",
        "in": "header",
        "required": False,
        "description": "The user (the header is USER_HEADER; DEFAULT_USER applies when absent).",
        "schema": {"type": "string"},
    }


def _html_page(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "tags": ["operations"],
            "parameters": [_user_header(), *parameters],
            "responses": {
                "200": {
                    "description": "the page",
                    "content": {HTML: {"schema": {"type": "string"}}},
                },
                **_errors(400, 401, 404, 503),
            },
        }
    }


def _query(name: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": "string"}}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["status", "message"],
        "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
    },
    "TaskIds": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "TaskStatus": {
        "type": "string",
        "enum": [
            "102 Processing",
            "200 OK",
            "202 Accepted",
            "422 Unprocessable Entity",
            "500 Internal Server Error",
        ],
    },
    "TaskSummary": {
        "type": "object",
        "required": ["taskID", "taskStatus", "eventType", "created", "updated", "deleted"],
        "properties": {
            "taskID": {"type": "string"},
            "taskStatus": _ref("TaskStatus"),
            "eventType": {"type": "string"},
            "created": TIME,
            "updated": TIME,
            "deleted": NULLABLE_TIME,
        },
    },
    "RouteRun": {
        "type": "object",
        "required": ["route", "handler", "status", "attempts", "started", "finished"],
        "properties": {
            "route": {"type": "string"},
            "handler": {"type": "string"},
            "status": {"type": "string", "enum": ["PROCESSING", "SUCCEEDED", "FAILED"]},
            "attempts": {"type": "integer"},
            "exceptionType": NULLABLE_TEXT,
            "exceptionValue": NULLABLE_TEXT,
            "exceptionTraceback": NULLABLE_TEXT,
            "started": TIME,
            "finished": NULLABLE_TIME,
        },
    },
    "Task": {
        "type": "object",
        "required": [
            "eventType",
            "source",
            "eventID",
            "taskID",
            "taskStatus",
            "attempts",
            "routes",
        ],
        "properties": {
            "eventType": {"type": "string"},
            "eventTypeVersion": {},
            "source": {"type": "string"},
            "eventID": {"type": "string"},
            "eventTime": NULLABLE_TIME,
            "schemaURL": {},
            "contentType": NULLABLE_TEXT,
            "specVersion": {"type": "string"},
            "eventData": {"type": "string", "description": "the document as received, JSON text"},
            "data": {"type": "string"},
            "taskID": {"type": "string"},
            "taskStatus": _ref("TaskStatus"),
            "taskApplicationName": {"type": "string"},
            "taskName": {"type": "string"},
            "exceptionType": NULLABLE_TEXT,
            "exceptionValue": NULLABLE_TEXT,
            "exceptionTraceback": NULLABLE_TEXT,
            "attempts": {"type": "integer"},
            "created": TIME,
            "updated": TIME,
            "deleted": NULLABLE_TIME,
            "routes": {"type": "array", "items": _ref("RouteRun")},
        },
    },
    "Subscription": {
        "type": "object",
        "required": ["uuid", "name", "user", "jsonpath", "target_url", "version", "disabled"],
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "user": {"type": "string"},
            "jsonpath": {"type": "string"},
            "target_url": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "object"},
            "auth": {"type": "object"},
            "secret": NULLABLE_TEXT,
            "disabled": NULLABLE_TIME,
            "error": NULLABLE_TEXT,
            "created": TIME,
            "updated": TIME,
            "deleted": NULLABLE_TIME,
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "on create/update: the JSONPath matches none of the recent events",
            },
        },
    },
    "DryRun": {
        "type": "object",
        "required": ["jsonpath", "examined", "matched", "not_matched", "reasons", "events"],
        "properties": {
            "jsonpath": {"type": "string"},
            "examined": {"type": "integer"},
            "matched": {"type": "integer"},
            "not_matched": {"type": "integer"},
            "reasons": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"failed": {"type": "string"}, "events": {"type": "integer"}},
                },
            },
            "events": {"type": "array", "items": {"type": "object"}},
            "seconds": {"type": "number"},
        },
    },
    "Replay": {
        "type": "object",
        "required": ["replay", "subscription", "events", "rate", "dry_run"],
        "properties": {
            "replay": {"type": ["integer", "null"]},
            "subscription": {"type": "string", "format": "uuid"},
            "events": {"type": "integer"},
            "jsonpath": {"type": "string"},
            "rate": {"type": "number"},
            "dry_run": {"type": "boolean"},
            "seconds": {"type": "number"},
        },
    },
    "RouteReplay": {
        "type": "object",
        "required": ["replay", "route", "only_failed", "events", "rate", "dry_run"],
        "properties": {
            "replay": {"type": ["integer", "null"]},
            "route": {"type": "string"},
            "only_failed": {"type": "boolean"},
            "events": {"type": "integer"},
            "jsonpath": {"type": ["string", "null"]},
            "rate": {"type": "number"},
            "dry_run": {"type": "boolean"},
            "seconds": {"type": "number"},
        },
    },
    "ReplayProgress": {
        "type": "object",
        "required": ["replay", "kind", "total", "done", "failed", "pending", "finished"],
        "properties": {
            "replay": {"type": "integer"},
            "kind": {"type": "string", "enum": ["subscription", "route"]},
            "total": {"type": "integer"},
            "done": {"type": "integer"},
            "failed": {"type": "integer"},
            "pending": {"type": "integer"},
            "finished": {"type": "boolean"},
        },
    },
    "Lineage": {
        "type": "object",
        "required": ["transaction", "produced_by", "produced"],
        "properties": {
            "transaction": {"type": "integer"},
            "produced_by": {"type": "array", "items": {"type": "object"}},
            "produced": {"type": "array", "items": {"type": "object"}},
        },
    },
    "SubscriptionInput": {
        "type": "object",
        "description": "name, jsonpath, target_url, auth, extensions, secret, disabled (see README)",
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}


def _paths() -> dict[str, Any]:
    task = [_task_id()]
    subscription = [_user_header(), _task_id("uuid")]
    return {
        "/receive": {
            "post": {
                "summary": "Receive a CloudEvent (0.1, 1.0 structured, binary or batch)",
                "requestBody": {"required": True, "content": {"*/*": {"schema": {}}}},
                "responses": {
                    "202": _json(_ref("TaskIds"), "stored; the task id (a list for a batch)"),
                    "200": _json(_ref("TaskIds"), "a duplicate: the original task id"),
                    **_errors(400, 404, 405, 413, 415, 503),
                },
            }
        },
        "/status/{task_id}": {
            "get": {
                "summary": "An event's status string",
                "parameters": task,
                "responses": {"200": _json(_ref("TaskStatus"), "the status"), **_errors(404, 422)},
            }
        },
        "/get/{task_id}": {
            "get": {
                "summary": "An event, its status and every route's result",
                "parameters": task,
                "responses": {"200": _json(_ref("Task"), "the task object"), **_errors(404, 422)},
            }
        },
        "/": {
            "get": {
                "summary": "Recent tasks, newest first",
                "parameters": [_query("limit"), _query("offset"), _query("after")],
                "responses": {
                    "200": _json(
                        {"type": "array", "items": _ref("TaskSummary")}, "a page of tasks"
                    ),
                    **_errors(400),
                },
            }
        },
        "/eventmatch": {
            "get": {
                "summary": "The caller's subscriptions",
                "parameters": [_user_header()],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Subscription")}, "subscriptions"),
                    **_errors(400, 401),
                },
            },
            "post": {
                "summary": "Create a subscription",
                "parameters": [_user_header()],
                "requestBody": {"content": {JSON: {"schema": _ref("SubscriptionInput")}}},
                "responses": {
                    "200": _json(_ref("Subscription"), "the new subscription"),
                    **_errors(400, 401, 413),
                },
            },
        },
        "/eventmatch/{uuid}": {
            "get": {
                "summary": "One of the caller's subscriptions",
                "parameters": subscription,
                "responses": {"200": _json(_ref("Subscription"), "it"), **_errors(400, 401, 404)},
            },
            "put": {
                "summary": "Update a subscription",
                "parameters": subscription,
                "requestBody": {"content": {JSON: {"schema": _ref("SubscriptionInput")}}},
                "responses": {"200": _json(_ref("Subscription"), "it"), **_errors(400, 401, 404)},
            },
            "delete": {
                "summary": "Soft-delete a subscription",
                "parameters": subscription,
                "responses": {
                    "200": {"description": "deleted (empty body)"},
                    **_errors(400, 401, 404),
                },
            },
        },
        "/eventmatch/test": {
            "post": {
                "summary": "Dry-run a JSONPath over stored events, with why each did not match",
                "parameters": [_user_header()],
                "requestBody": {"content": {JSON: {"schema": {"type": "object"}}}},
                "responses": {"200": _json(_ref("DryRun"), "the dry run"), **_errors(400, 401)},
            }
        },
        "/eventmatch/{uuid}/test": {
            "get": {
                "summary": "Dry-run one of the caller's subscriptions over stored events",
                "parameters": [*subscription, _query("last"), _query("since"), _query("until")],
                "responses": {
                    "200": _json(_ref("DryRun"), "the dry run"),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/eventmatch/{uuid}/replay": {
            "post": {
                "summary": "Send stored events to one of the caller's subscriptions again",
                "parameters": subscription,
                "requestBody": {"content": {JSON: {"schema": {"type": "object"}}}},
                "responses": {
                    "200": _json(_ref("Replay"), "how many go, and the replay"),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/routes/{route}/replay": {
            "post": {
                "summary": "Run one route again on stored events (its failed runs, or all): "
                "ADMIN_USERS only",
                "parameters": [_user_header(), _task_id("route")],
                "requestBody": {"content": {JSON: {"schema": {"type": "object"}}}},
                "responses": {
                    "200": _json(_ref("RouteReplay"), "how many runs go, and the replay"),
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/replays/{id}": {
            "get": {
                "summary": "How far a replay got (for whoever asked for it, or an admin)",
                "parameters": [_user_header(), _task_id("id")],
                "responses": {
                    "200": _json(_ref("ReplayProgress"), "the replay's counts"),
                    **_errors(401, 404),
                },
            }
        },
        "/lineage/{transaction_id}": {
            "get": {
                "summary": "What produced a transaction, and what was produced from it",
                "parameters": [_task_id("transaction_id")],
                "responses": {"200": _json(_ref("Lineage"), "the chain"), **_errors(400, 404)},
            }
        },
        "/ui/": _html_page("The operator page"),
        "/ui/event": _html_page("Events by task id, event id or transaction id", _query("q")),
        "/ui/failures": _html_page("The events a route failed on", _query("route", True)),
        "/ui/subscriptions/{uuid}/{action}": {
            "post": {
                "summary": "Re-enable a subscription (enable) or retry its dead deliveries (retry)",
                "tags": ["operations"],
                "parameters": [
                    _user_header(),
                    _task_id("uuid"),
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["enable", "retry"]},
                    },
                ],
                "requestBody": {
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {"token": {"type": "string"}},
                            }
                        }
                    }
                },
                "responses": {
                    "303": {"description": "done; back to the page"},
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format)",
                "tags": ["operations"],
                "responses": {
                    "200": {
                        "description": "the exposition",
                        "content": {METRICS_TYPE: {"schema": {"type": "string"}}},
                    },
                    **_errors(404, 503),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "The process is up",
                "tags": ["operations"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"const": "ok"}},
                        },
                        "up",
                    ),
                    **_errors(404),
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Database (schema current) and broker reachable",
                "tags": ["operations"],
                "responses": {
                    "200": _json(_ref("Readiness"), "ready"),
                    "503": _json(_ref("Readiness"), "not ready: the checks say why"),
                    **_errors(404),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["operations"],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors(404)},
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pacifica-dispatcher",
            "version": "0.3.0",
            "description": "Receives Pacifica CloudEvents, routes them to handlers, forwards "
            "them to subscribed webhooks; operator page and metrics.",
        },
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": {"Error": _json(_ref("Error"), "an error, naming what is wrong")},
        },
    }
