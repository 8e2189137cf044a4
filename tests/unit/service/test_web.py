"""The HTTP edge, called in-process through WSGI: status codes, shapes and errors."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import peewee
import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.event_handlers import NoopEventHandler
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.intake import Intake
from pacifica.dispatcher.service.web import create_app
from pacifica.dispatcher.storage import events
from pacifica.dispatcher.storage.schema import EventRecord
from pacifica.dispatcher.storage.values import utcnow
from tests.conftest import LoadJson, WSGIClient, outbox_of


@pytest.fixture
def sent() -> list[str]:
    return []


@pytest.fixture
def intake(sent: list[str]) -> Intake:
    def publish(ids: list[str]) -> list[str]:
        sent.extend(ids)
        return ids

    return Intake(outbox_of(publish))


@pytest.fixture
def client(sqlite_db: peewee.Database, tmp_path: Path, intake: Intake) -> WSGIClient:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), "MAX_BODY_SIZE": "4096"})
    return WSGIClient(create_app(settings, intake.submit))


def test_receive_answers_202_with_task_id_and_location(
    client: WSGIClient, intake: Intake, sent: list[str], load_json: LoadJson
) -> None:
    response = client.post("/receive", load_json("metadata_ingest_event.json"))
    assert response.status == 202
    task_id = response.json()
    assert response.headers["Location"] == f"/status/{task_id}"
    assert intake.drain()
    assert sent == [task_id]
    assert dispatch.get_event(task_id).enqueued is not None
    assert client.get(f"/status/{task_id}").json() == "202 Accepted"


def test_duplicate_event_answers_200_with_the_original_id(
    client: WSGIClient, intake: Intake, sent: list[str], load_json: LoadJson
) -> None:
    first = client.post("/receive", load_json("metadata_ingest_event.json")).json()
    again = client.post("/receive", load_json("metadata_ingest_event.json"))
    assert (again.status, again.json()) == (200, first)
    assert intake.drain()
    assert sent == [first]


def test_batch_answers_a_list_of_ids(client: WSGIClient, intake: Intake, sent: list[str]) -> None:
    batch = [
        {"specversion": "1.0", "id": str(i), "type": "t", "source": "s", "data": [i]}
        for i in range(3)
    ]
    response = client.post(
        "/receive",
        json.dumps(batch),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert response.status == 202
    assert intake.drain()
    assert response.json() == sent
    assert len(sent) == 3


def test_unsent_event_is_still_accepted_and_left_for_the_sweeper(
    sqlite_db: peewee.Database, tmp_path: Path, load_json: LoadJson
) -> None:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    refusing = Intake(outbox_of(lambda ids: []))
    client = WSGIClient(create_app(settings, refusing.submit))
    response = client.post("/receive", load_json("metadata_ingest_event.json"))
    assert response.status == 202
    assert refusing.drain()
    record = dispatch.get_event(response.json())
    assert record.enqueued is None
    assert events.claim_stranded(60, 3600) == []  # still within its grace period
    assert events.claim_stranded(0, 3600) == [str(record.uuid)]


def test_receive_refusing_a_method_names_the_allowed_one(client: WSGIClient) -> None:
    assert client.get("/receive").headers["Allow"] == "POST"


def test_receive_reads_a_body_without_content_length(
    client: WSGIClient, intake: Intake, sent: list[str], load_json: LoadJson
) -> None:
    """A chunked request reaches the app with no Content-Length; the server decodes the body."""
    body = json.dumps(load_json("metadata_ingest_event.json")).encode()
    response = client.request(
        "POST", "/receive", body, headers={"Content-Type": "application/json", "Content-Length": ""}
    )
    assert response.status == 202
    assert intake.drain()
    assert sent == [response.json()]
    oversized = client.request(
        "POST",
        "/receive",
        b"{}" + b" " * 5000,
        headers={"Content-Type": "application/json", "Content-Length": ""},
    )
    assert oversized.status == 413


def test_get_returns_the_upstream_object_with_routes(
    client: WSGIClient, load_json: LoadJson
) -> None:
    task_id = client.post("/receive", load_json("metadata_ingest_event.json")).json()
    router = Router()
    router.add_route("$", NoopEventHandler())
    dispatch.process(task_id, router)
    body = client.get(f"/get/{task_id}").json()
    assert body["taskStatus"] == "200 OK"
    assert body["eventID"] == "metadata.ingest.1"
    assert json.loads(body["data"])[-1]["value"] == 1
    assert body["routes"][0]["status"] == "SUCCEEDED"


def test_listing_is_paginated_with_a_next_link(client: WSGIClient) -> None:
    for i in range(3):
        client.post("/receive", {"specversion": "1.0", "id": str(i), "type": "t", "source": "s"})
    first = client.get("/?limit=2")
    assert len(first.json()) == 2
    assert 'rel="next"' in first.headers["Link"]
    rest = client.get("/?limit=2&offset=2")
    assert len(rest.json()) == 1
    assert "Link" not in rest.headers


def test_following_the_next_links_lists_every_task_once_newest_first(client: WSGIClient) -> None:
    ids = [
        client.post("/receive", {"specversion": "1.0", "id": str(i), "type": "t", "source": "s"})
        for i in range(7)
    ]
    tied = [r.json() for r in ids[2:5]]  # created in one instant: the task id breaks the tie
    EventRecord.update(created=utcnow() - timedelta(minutes=1)).where(
        EventRecord.uuid.in_(tied)
    ).execute()
    seen, path = [], "/?limit=2"
    while True:
        page = client.get(path)
        seen += [task["taskID"] for task in page.json()]
        if "Link" not in page.headers:
            break
        path = page.headers["Link"].split(">", 1)[0].lstrip("<")
        assert "after=" in path
        assert "offset" not in path
    assert seen == [task["taskID"] for task in client.get("/").json()]
    assert sorted(seen) == sorted(r.json() for r in ids)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("POST", "/receive", b"{nope", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        ("POST", "/receive", b"[]", {"Content-Type": "application/json"}, 400, "JSON object"),
        ("POST", "/receive", b"x", {"Content-Type": "text/plain"}, 415, "text/plain"),
        (
            "POST",
            "/receive",
            b"{}" + b" " * 5000,
            {"Content-Type": "application/json"},
            413,
            "limit",
        ),
        ("GET", "/receive", b"", {}, 405, "takes POST"),
        ("POST", "/receive/more", b"{}", {"Content-Type": "application/json"}, 404, "no such"),
        ("POST", "/receive", b"{}", {"Content-Length": "x"}, 400, "Content-Length"),
        ("GET", "/status/abc", b"", {}, 422, "not a UUID"),
        ("GET", "/status/00000000-0000-0000-0000-000000000000", b"", {}, 404, "no task"),
        ("GET", "/status", b"", {}, 404, "task id is required"),
        ("GET", "/get", b"", {}, 404, "task id is required"),
        ("GET", "/get/abc", b"", {}, 422, "not a UUID"),
        ("GET", "/nope", b"", {}, 404, "no such path"),
        ("GET", "/?limit=0", b"", {}, 400, "limit"),
        ("GET", "/?offset=-1", b"", {}, 400, "offset"),
        ("GET", "/?after=1.2", b"", {}, 400, "cursor"),
        ("GET", f"/?after={10**17}.{'0' * 32}", b"", {}, 400, "cursor"),
    ],
)
def test_bad_requests_get_json_errors_without_tracebacks(
    client: WSGIClient,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = client.request(method, path, body, headers=headers)
    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    payload = response.json()
    assert payload["status"].startswith(str(status))
    assert message in payload["message"]
    assert "Traceback" not in response.body.decode()
    assert not response.body.endswith(b" ")


@pytest.mark.parametrize("depth", [65, 1_990])  # 1,990: deeper than the JSON decoder goes
def test_an_event_nested_deeper_than_64_levels_is_a_400(
    client: WSGIClient, sent: list[str], depth: int
) -> None:
    """The README's limit: whatever walks a deeper document later would run out of stack."""
    data = "[" * depth + "]" * depth
    body = f'{{"specversion": "1.0", "id": "deep", "type": "t", "source": "s", "data": {data}}}'
    response = client.request("POST", "/receive", body, {"Content-Type": "application/json"})
    assert response.status == 400
    assert "nested deeper than 64 levels" in response.json()["message"]
    shallow = "[" * 60 + "]" * 60
    body = f'{{"specversion": "1.0", "id": "ok", "type": "t", "source": "s", "data": {shallow}}}'
    assert (
        client.request("POST", "/receive", body, {"Content-Type": "application/json"}).status == 202
    )
