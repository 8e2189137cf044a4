"""Issue 12: generated bad requests to every endpoint, valid events mixed in.

More than 5,000 requests (hypothesis, derandomized so CI sees the same ones
every run) go in-process to the WSGI app the service mounts, on a real SQLite
database: ``/receive``, ``/status/<id>``, ``/get/<id>``, ``/`` and
``/eventmatch[/<id>]`` with GET, POST, PUT, DELETE (and a few others), with
random paths, query strings, headers, users and bodies (random bytes, random
JSON, events and subscriptions with hostile attribute values). No answer may
be >= 500, every error body must be the JSON ``{"status", "message"}``, and
afterwards every valid event sent in between is processed by the real router
to a final status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.intake import Intake
from pacifica.dispatcher.service.web import EventMatch, create_app
from pacifica.dispatcher.service.worker import default_router
from pacifica.dispatcher.storage import EventStatus, open_database, sync_schema
from tests.conftest import WSGIClient, outbox_of

BATCH = 20
BATCHES = 260  # x BATCH = 5,200 generated requests
FINAL = {EventStatus.SUCCEEDED, EventStatus.UNROUTED, EventStatus.FAILED}

latin1 = st.text(st.characters(max_codepoint=255), max_size=40)
hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["\ud800", "a\x00b", "x" * 300, "s" * 1100, "", " ", "²", "é", "\u202e"]),
)
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_text
)
json_value = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)
event_attributes = st.fixed_dictionaries(
    {
        "specversion": st.sampled_from(["1.0", "1.0", "0.3", 1]),
        "id": st.one_of(hostile_text, json_value),
        "type": hostile_text,
        "source": hostile_text,
    },
    optional={
        "time": st.one_of(hostile_text, st.just("2024-01-01T00:00:00Z")),
        "subject": hostile_text,
        "data": json_value,
        "data_base64": hostile_text,
        "datacontenttype": hostile_text,
        "comexampleext": hostile_text,
    },
)
legacy_attributes = st.fixed_dictionaries(
    {
        "cloudEventsVersion": st.sampled_from(["0.1", "0.2"]),
        "eventID": hostile_text,
        "eventType": hostile_text,
        "source": hostile_text,
    },
    optional={"eventTime": hostile_text, "extensions": json_value, "data": json_value},
)
subscription_body = st.fixed_dictionaries(
    {},
    optional={
        "name": hostile_text,
        "jsonpath": st.one_of(
            hostile_text, st.sampled_from(["$", "$..*..*..*", '$[?(@["type"] = "t")]', "data"])
        ),
        "target_url": st.one_of(
            hostile_text,
            st.sampled_from(
                [
                    "http://example.org/hook",
                    "http://127.0.0.1/",
                    "http://u:p@example.org/",
                    "ftp://x/",
                    "http://[::1/",
                    "http://example.org:99999/",
                ]
            ),
        ),
        "auth": json_value,
        "extensions": json_value,
        "secret": json_value,
        "disabled": json_value,
        "uuid": json_value,
        "bogus": json_value,
    },
)


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()  # lone surrogates travel as their JSON escapes


bodies = st.one_of(
    st.binary(max_size=64),
    json_value.map(encoded),
    event_attributes.map(encoded),
    legacy_attributes.map(encoded),
    st.lists(event_attributes, max_size=3).map(encoded),
    subscription_body.map(encoded),
)
segments = st.one_of(st.uuids().map(str), latin1, st.just(""))
paths = st.one_of(
    st.sampled_from(["/receive", "/", "/eventmatch", "/status", "/get", "/receive/x"]),
    segments.map(lambda s: f"/status/{s}"),
    segments.map(lambda s: f"/get/{s}"),
    segments.map(lambda s: f"/eventmatch/{s}"),
    st.tuples(segments, segments).map(lambda p: f"/eventmatch/{p[0]}/{p[1]}"),
    latin1.map(lambda s: "/" + s),
)
queries = st.lists(
    st.tuples(st.sampled_from(["limit", "offset", "x", ""]), latin1), max_size=3
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "text/plain",
            "",
        ]
    ),
    latin1,
)
headers = st.fixed_dictionaries(
    {"Content-Type": content_types},
    optional={
        "Http-Remote-User": st.one_of(st.sampled_from(["alice", " alice", "Ã©"]), latin1),
        "ce-specversion": st.sampled_from(["1.0", "0.3", ""]),
        "ce-id": latin1,
        "ce-type": latin1,
        "ce-source": latin1,
        "ce-time": latin1,
    },
)
requests_ = st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
    paths,
    queries,
    headers,
    bodies,
)


@dataclass
class Tally:
    """What the run sent and got."""

    sent: int = 0
    valid_tasks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check(
    tally: Tally, request: tuple[Any, ...], status: int, headers: dict[str, str], body: bytes
) -> None:
    """Record an answer that breaks the rules: >= 500, or an error body that is not our JSON."""
    if status >= 500:
        tally.problems.append(f"{status} for {request!r}: {body[:200]!r}")
    elif status >= 400 and request[0] != "HEAD":
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        shaped = isinstance(payload, dict) and set(payload) == {"status", "message"}
        if not shaped or not headers.get("Content-Type", "").startswith("application/json"):
            tally.problems.append(f"non-JSON {status} for {request!r}: {body[:200]!r}")


def test_generated_bad_requests_never_get_a_500_or_a_non_json_error(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'fuzz.sqlite3'}")
    sync_schema(database)
    config = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    intake = Intake(outbox_of(lambda ids: ids))
    client = WSGIClient(create_app(config, intake.submit, {"eventmatch": EventMatch(config)}))
    tally = Tally()

    @settings(
        max_examples=BATCHES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(requests_, min_size=BATCH, max_size=BATCH))
    def send(batch: list[tuple[Any, ...]]) -> None:
        for method, path, query, request_headers, body in batch:
            answer = client.request(
                method, f"{path}?{query}" if query else path, body, headers=request_headers
            )
            tally.sent += 1
            request = (method, path, query, request_headers, body)
            check(tally, request, answer.status, answer.headers, answer.body)
        valid = {
            "specversion": "1.0",
            "id": f"valid-{len(tally.valid_tasks)}",
            "type": "t",
            "source": "/fuzz",
            "data": {"n": len(tally.valid_tasks)},
        }
        accepted = client.post("/receive", valid)
        assert accepted.status == 202, accepted.body
        tally.valid_tasks.append(accepted.json())

    try:
        send()
        assert tally.problems[:5] == []
        assert tally.sent >= 5000
        router = default_router(config)
        statuses = {dispatch.process(task, router) for task in tally.valid_tasks}
        assert statuses <= FINAL, statuses
        shown = {client.get(f"/status/{task}").json() for task in tally.valid_tasks}
        assert shown <= {s.http for s in FINAL}, shown
    finally:
        database.close()
