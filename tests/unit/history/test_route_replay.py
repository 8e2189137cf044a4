"""Route replays: only the selected runs of one route run again; the others keep their outcome."""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import peewee
import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.history import replay
from pacifica.dispatcher.history.dryrun import Selection
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.openapi import document
from pacifica.dispatcher.service.outbox import delivery_outbox, event_outbox
from pacifica.dispatcher.service.web import Replays, RouteReplays, create_app
from pacifica.dispatcher.storage import EventStatus, RunStatus
from pacifica.dispatcher.storage.schema import EventRecord, ReplayRun, RouteRun
from pacifica.dispatcher.testing import RecordingEventHandler, event_from_dict
from tests.conftest import LoadJson, WSGIClient

ANY = '$["data"]'
EVEN = '$[?(@["eventID"] = "e0" or @["eventID"] = "e2")]'


def test_route_replay_reruns_only_the_selected_failed_runs(
    sqlite_db: peewee.Database, load_json: LoadJson
) -> None:
    flaky = RecordingEventHandler(error=RuntimeError("disk full"))
    steady = RecordingEventHandler()
    other = RecordingEventHandler(error=RuntimeError("still broken"))
    router = Router()
    router.add_route(ANY, flaky, name="flaky")
    router.add_route(ANY, steady, name="steady")
    router.add_route(ANY, other, name="other")
    template = load_json("sop_example_event.json")
    received = [event_from_dict({**copy.deepcopy(template), "eventID": f"e{n}"}) for n in range(4)]
    accepted = dispatch.accept(received)
    for a in accepted:
        dispatch.process(a.uuid, router)
    assert (len(flaky.events), len(steady.events), len(other.events)) == (4, 4, 4)
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    selection = Selection(last=None, since=since)

    chosen = replay.plan_route("flaky", selection, EVEN, only_failed=True)
    assert len(chosen.events) == 2  # the dry run: events e0 and e2
    flaky.error = None  # the handler is fixed
    key, keys = replay.start_route("flaky", selection, chosen, "cli", 1000.0, True)
    assert key > 0
    assert RouteRun.select().where(RouteRun.status == int(RunStatus.REPLAY)).count() == 2
    published: list[str] = []

    def publish(ids: list[str], delay: float) -> list[str]:
        published.extend(ids)
        return ids

    def nothing(ids: list[int], delay: float) -> list[int]:
        raise AssertionError("a route replay publishes no delivery")

    through = replay.Publishers(event_outbox(publish, 3600), delivery_outbox(nothing))
    deadline = time.monotonic() + 5
    while replay.publish_due(key, through):  # the second is due a millisecond after the first
        assert time.monotonic() < deadline
    assert sorted(published) == sorted(str(k) for k in keys)
    for task_id in published:
        dispatch.process(task_id, router)
    # flaky ran again on the two selected events only; steady and other did not run again
    assert (len(flaky.events), len(steady.events), len(other.events)) == (6, 4, 4)
    statuses = {
        r.route: RunStatus(r.status) for r in RouteRun.select().where(RouteRun.event == keys[0])
    }
    assert statuses == {
        "flaky": RunStatus.SUCCEEDED,
        "steady": RunStatus.SUCCEEDED,
        "other": RunStatus.FAILED,
    }
    event = EventRecord.get(EventRecord.uuid == keys[0])
    assert EventStatus(event.status) is EventStatus.FAILED  # "other" still failed
    assert replay.plan_route("flaky", selection, EVEN, only_failed=True).events == []
    assert len(replay.plan_route("flaky", selection, None, only_failed=False).events) == 4


ROOT = {"Http-Remote-User": "root"}
ALICE = {"Http-Remote-User": "alice"}


@pytest.fixture
def client(sqlite_db: peewee.Database, tmp_path: Path) -> WSGIClient:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), "ADMIN_USERS": "root"})
    mounts = {"routes": RouteReplays(settings, ["flaky", "steady"]), "replays": Replays(settings)}
    return WSGIClient(create_app(settings, lambda events: [], mounts))


@pytest.fixture
def failed(sqlite_db: peewee.Database, load_json: LoadJson) -> list[str]:
    """Three stored events on which route ``flaky`` failed and ``steady`` succeeded."""
    router = Router()
    router.add_route(ANY, RecordingEventHandler(error=RuntimeError("no")), name="flaky")
    router.add_route(ANY, RecordingEventHandler(), name="steady")
    template = load_json("sop_example_event.json")
    received = [event_from_dict({**copy.deepcopy(template), "eventID": f"h{n}"}) for n in range(3)]
    keys = [a.uuid for a in dispatch.accept(received)]
    dispatch.process_many(keys, router)
    return keys


def post_route(client: WSGIClient, route: str, body: Any, headers: dict[str, str]) -> Any:
    return client.request("POST", f"/routes/{route}/replay", body, headers=headers)


def test_http_route_replay_is_for_admins_counts_first_then_schedules(
    client: WSGIClient, failed: list[str]
) -> None:
    since = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    body = {"since": since, "rate": 2, "dry_run": True}
    refused = post_route(client, "flaky", body, ALICE)
    assert refused.status == 403
    assert "ADMIN_USERS" in refused.json()["message"]
    assert post_route(client, "nosuch", body, ROOT).status == 404
    dry = post_route(client, "flaky", body, ROOT).json()
    assert (dry["events"], dry["replay"], dry["only_failed"], dry["seconds"]) == (
        3,
        None,
        True,
        1.5,
    )
    assert post_route(client, "steady", body, ROOT).json()["events"] == 0  # no failed run
    assert post_route(client, "steady", {**body, "only_failed": False}, ROOT).json()["events"] == 3
    assert ReplayRun.select().count() == 0  # a dry run stores nothing

    done = post_route(client, "flaky", {**body, "dry_run": False}, ROOT).json()
    assert done["events"] == 3
    assert done["replay"] > 0
    assert ReplayRun.select().count() == 3
    progress = client.get(f"/replays/{done['replay']}", headers=ROOT)
    assert progress.status == 200
    assert progress.json() == {
        "replay": done["replay"],
        "kind": "route",
        "total": 3,
        "done": 0,
        "failed": 0,
        "pending": 3,
        "finished": False,
    }
    assert client.get(f"/replays/{done['replay']}", headers=ALICE).status == 404  # not hers
    assert client.get("/replays/x", headers=ROOT).status == 404


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"since": "2026-01-01", "rate": 0},
        {"since": "2026-01-01", "only_failed": "yes"},
        {"since": "2026-01-01", "dry_run": "no"},
        {"since": "2026-01-01", "jsonpath": "$["},
        {"since": "2026-01-01", "colour": "red"},
        [1, 2],
    ],
)
def test_http_route_replay_refuses_bad_input_with_400(
    client: WSGIClient, failed: list[str], body: Any
) -> None:
    answer = post_route(client, "flaky", body, ROOT)
    assert answer.status == 400
    assert answer.json()["status"].startswith("400")


def test_the_openapi_document_lists_route_replays_and_replay_progress() -> None:
    paths = document()["paths"]
    assert {"/routes/{route}/replay", "/replays/{id}"} <= set(paths)
    assert "403" in paths["/routes/{route}/replay"]["post"]["responses"]


def test_the_pump_follows_a_route_replay_until_every_run_ran(failed: list[str]) -> None:
    router = Router()
    router.add_route(ANY, RecordingEventHandler(), name="flaky")  # fixed
    router.add_route(ANY, RecordingEventHandler(), name="steady")
    since = datetime.now(timezone.utc) - timedelta(hours=1)
    selection = Selection(last=None, since=since)
    chosen = replay.plan_route("flaky", selection, None, only_failed=True)
    key, _ = replay.start_route("flaky", selection, chosen, "cli", 1000.0, True)

    def run(ids: list[str], delay: float) -> list[str]:  # a worker, at once
        dispatch.process_many(ids, router)
        return ids

    def nothing(ids: list[int], delay: float) -> list[int]:
        raise AssertionError("a route replay publishes no delivery")

    shown: list[str] = []
    through = replay.Publishers(event_outbox(run, 3600), delivery_outbox(nothing))
    final = replay.pump(key, through, lambda p: shown.append(replay.describe(p)))
    assert (final.kind, final.total, final.delivered, final.failed, final.done) == (
        "route",
        3,
        3,
        0,
        True,
    )
    assert shown[-1] == f"replay {key}: 3/3 ran, 0 failed, 0 pending"
