"""Route replays: only the selected runs of one route run again; the others keep their outcome."""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta, timezone

import peewee

from pacifica.dispatcher.history import replay
from pacifica.dispatcher.history.dryrun import Selection
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.outbox import delivery_outbox, event_outbox
from pacifica.dispatcher.storage import EventStatus, RunStatus
from pacifica.dispatcher.storage.schema import EventRecord, RouteRun
from pacifica.dispatcher.testing import RecordingEventHandler, event_from_dict
from tests.conftest import LoadJson

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
