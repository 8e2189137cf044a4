"""Dry runs over stored events: counts and grouped reasons, over HTTP and on the command line."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import peewee
import pytest

from pacifica.dispatcher import cli
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.history.dryrun import Selection, dry_run, recent_note
from pacifica.dispatcher.service.web import EventMatch, create_app
from pacifica.dispatcher.storage import write_transaction
from pacifica.dispatcher.storage.events import NewEvent, insert_events
from pacifica.dispatcher.subscriptions.registry import compile_jsonpath
from tests.conftest import LoadJson, WSGIClient
from tests.unit.history.test_explain import REFERENCE_JSONPATH

ALICE = {"Http-Remote-User": "alice"}
BOB = {"Http-Remote-User": "bob"}
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
FILES = '$["data"][*][?(@["destinationTable"] = "Files" and @["mimetype"] = "text/plain")]'


def store(documents: list[Any]) -> list[uuid.UUID]:
    """Store documents as events, the first the oldest."""
    start = START
    rows = [
        NewEvent(
            uuid.uuid4(),
            d["eventID"],
            d["source"],
            d["eventType"],
            "0.1",
            None,
            None,
            d,
            start + timedelta(seconds=n),
        )
        for n, d in enumerate(documents)
    ]
    with write_transaction():
        insert_events(rows)
    return [r.uuid for r in rows]


@pytest.fixture
def metadata_events(sqlite_db: peewee.Database, load_json: LoadJson) -> list[uuid.UUID]:
    """30 real Metadata events; every third has a text/plain file."""
    template = load_json("metadata_ingest_event.json")
    documents = []
    for n in range(30):
        document = copy.deepcopy(template)
        document["eventID"] = f"metadata.ingest.{n}"
        document["source"] = f"http://metadata.pacifica.org/transactions?_id={n}"
        document["data"][4]["mimetype"] = "text/plain" if n % 3 == 0 else "image/png"
        documents.append(document)
    return store(documents)


def test_dry_run_counts_matches_and_groups_reasons(metadata_events: list[uuid.UUID]) -> None:
    run = dry_run(FILES, compile_jsonpath(FILES), Selection(last=1000), show=3)
    assert (run.examined, run.matched) == (30, 10)
    assert run.reasons == [('@["mimetype"] = "text/plain"', 20)]
    assert [v.explanation.matched for v in run.verdicts] == [True, True, True]


def test_dry_run_explains_the_reference_jsonpath_on_every_event(
    metadata_events: list[uuid.UUID],
) -> None:
    run = dry_run(REFERENCE_JSONPATH, compile_jsonpath(REFERENCE_JSONPATH), Selection(last=5))
    assert (run.examined, run.matched) == (5, 0)
    assert run.reasons == [('@["source"] = "/pacifica/metadata/ingest"', 5)]
    newest = run.verdicts[0]
    assert newest.event.uuid == metadata_events[-1]
    assert newest.explanation.reason.endswith(
        '@["source"] is "http://metadata.pacifica.org/transactions?_id=29"'
    )


def test_dry_run_of_one_event_and_of_a_time_range(metadata_events: list[uuid.UUID]) -> None:
    path = compile_jsonpath(FILES)
    one = dry_run(FILES, path, Selection(last=None, ids=(metadata_events[3],)))
    assert (one.examined, one.matched) == (1, 1)
    since, until = START + timedelta(seconds=25), START + timedelta(seconds=29)
    recent = dry_run(FILES, path, Selection(last=None, since=since, until=until))
    assert (recent.examined, recent.matched) == (4, 1)  # events 25..28: 27 has a text/plain file


def test_recent_note_only_when_nothing_recent_matches(metadata_events: list[uuid.UUID]) -> None:
    assert recent_note(compile_jsonpath(FILES)) is None
    note = recent_note(compile_jsonpath(REFERENCE_JSONPATH))
    assert note is not None
    assert "matches none of the last 30 stored event(s)" in note
    assert '@["source"] is "http://metadata.pacifica.org/transactions?_id=29"' in note


@pytest.fixture
def client(sqlite_db: peewee.Database, tmp_path: Path) -> WSGIClient:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    return WSGIClient(create_app(settings, lambda events: [], {"eventmatch": EventMatch(settings)}))


def test_http_dry_run_of_a_posted_jsonpath(
    client: WSGIClient, metadata_events: list[uuid.UUID]
) -> None:
    body = {"jsonpath": REFERENCE_JSONPATH, "last": 10, "show": 2}
    response = client.request("POST", "/eventmatch/test", body, headers=ALICE)
    assert response.status == 200, response.body
    answer = response.json()
    assert (answer["examined"], answer["matched"], answer["not_matched"]) == (10, 0, 10)
    assert answer["reasons"] == [
        {"failed": '@["source"] = "/pacifica/metadata/ingest"', "events": 10}
    ]
    assert len(answer["events"]) == 2
    assert answer["events"][0]["uuid"] == str(metadata_events[-1])
    assert "transactions?_id=29" in answer["events"][0]["reason"]


@pytest.mark.parametrize(
    "body",
    [
        {"jsonpath": "$[", "last": 10},
        {"jsonpath": FILES, "last": 0},
        {"jsonpath": FILES, "last": 10_001},
        {"jsonpath": FILES, "since": "yesterday"},
        {"jsonpath": FILES, "event": "not-a-uuid"},
        {"jsonpath": FILES, "colour": "red"},
        {"jsonpath": "$" + "..a" * 3},
        ["not", "an", "object"],
    ],
)
def test_http_dry_run_refuses_bad_input_with_400(client: WSGIClient, body: Any) -> None:
    response = client.request("POST", "/eventmatch/test", body, headers=ALICE)
    assert response.status == 400, response.body


def test_http_dry_run_of_a_saved_subscription_is_for_its_owner_only(
    client: WSGIClient, metadata_events: list[uuid.UUID]
) -> None:
    created = client.request(
        "POST",
        "/eventmatch",
        {"name": "files", "jsonpath": FILES, "target_url": "http://example.com/hook"},
        headers=ALICE,
    ).json()
    assert "warnings" not in created  # it matches recent events
    path = f"/eventmatch/{created['uuid']}/test?last=6"
    answer = client.request("GET", path, headers=ALICE).json()
    assert (answer["examined"], answer["matched"]) == (6, 2)
    assert client.request("GET", path, headers=BOB).status == 404
    assert (
        client.request("GET", f"/eventmatch/{created['uuid']}?last=6", headers=ALICE).status == 404
    )


def test_create_and_update_answers_warn_when_nothing_recent_matches(
    client: WSGIClient, metadata_events: list[uuid.UUID]
) -> None:
    body = {"name": "ref", "jsonpath": REFERENCE_JSONPATH, "target_url": "http://example.com/h"}
    created = client.request("POST", "/eventmatch", body, headers=ALICE)
    assert created.status == 200  # nothing new is refused
    warnings = created.json()["warnings"]
    assert len(warnings) == 1
    assert "matches none of the last 30" in warnings[0]
    fixed = client.request(
        "PUT", f"/eventmatch/{created.json()['uuid']}", {"jsonpath": FILES}, headers=ALICE
    )
    assert fixed.status == 200
    assert "warnings" not in fixed.json()


def test_cli_jsonpath_test_prints_reasons_and_exits_1_when_nothing_matches(
    metadata_events: list[uuid.UUID],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'test.sqlite3'}")
    assert cli.main(["jsonpath", "test", REFERENCE_JSONPATH, "--last", "4", "--show", "1"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"0 of 4 event(s) match {REFERENCE_JSONPATH}\n")
    assert '  4 did not match at: @["source"] = "/pacifica/metadata/ingest"' in out
    assert "transactions?_id=29" in out
    event = str(metadata_events[0])
    assert cli.main(["jsonpath", "test", FILES, "--event", event, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["examined"], answer["matched"], answer["events"][0]["uuid"]) == (1, 1, event)
