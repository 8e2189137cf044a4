"""The Celery side's logic, in-process: how events are packed into messages and handed back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee
import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch, worker
from pacifica.dispatcher.service.views import TASK_NAME
from pacifica.dispatcher.storage import EventStatus, events
from pacifica.dispatcher.testing import RecordingEventHandler, event_from_dict


@pytest.fixture
def app(tmp_path: Path, sqlite_db: peewee.Database) -> Any:
    """A real Celery app on the in-memory broker whose ``send_task`` records each message.

    Celery is untyped, and the app also carries ``messages`` and ``handler``: hence ``Any``.
    """
    settings = Settings.from_env(
        {
            "DISPATCHER_DATA_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'test.sqlite3'}",
            "BROKER_URL": "memory://",
            "EVENTS_PER_MESSAGE": "3",
        }
    )
    handler = RecordingEventHandler()
    router = Router()
    router.add_route("$", handler, name="all")
    celery = worker.create_celery(settings, router)
    celery.messages = []

    def send_task(name: str, args: list[str], task_id: str | None = None, **_: Any) -> None:
        celery.messages.append((name, list(args), task_id))

    celery.send_task = send_task
    celery.handler = handler
    return celery


def accepted_ids(count: int) -> list[str]:
    events = [
        event_from_dict({"specversion": "1.0", "id": str(i), "type": "t", "source": "s"})
        for i in range(count)
    ]
    return [a.uuid for a in dispatch.accept(events)]


def test_events_are_packed_up_to_events_per_message(app: Any) -> None:
    ids = [f"id-{i}" for i in range(7)]
    assert worker.enqueue(app, ids) == ids
    assert [args for _, args, _ in app.messages] == [ids[0:3], ids[3:6], ids[6:]]


def test_a_broker_failure_stops_sending_and_reports_what_was_taken(app: Any) -> None:
    calls: list[list[str]] = []

    def failing_second(name: str, args: list[str], **_: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise ConnectionError("broker down")

    app.send_task = failing_second
    assert worker.enqueue(app, [f"id-{i}" for i in range(7)]) == ["id-0", "id-1", "id-2"]


def test_a_message_processes_every_event_it_names(app: Any) -> None:
    ids = accepted_ids(3)
    statuses = worker.process_task(app.tasks[TASK_NAME], *ids)
    assert statuses == dict.fromkeys(ids, "200 OK")
    assert len(app.handler.events) == 3
    assert app.messages == []


def test_a_long_running_message_hands_its_other_events_back_one_per_message(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "HAND_BACK_AFTER", 0.0)
    ids = accepted_ids(3)
    statuses = worker.process_task(app.tasks[TASK_NAME], *ids)
    assert statuses == {ids[0]: "200 OK"}
    assert [args for _, args, _ in app.messages] == [[ids[1]], [ids[2]]]
    handed_back = dispatch.get_event(ids[1])
    assert (handed_back.event_status, handed_back.attempts) == (EventStatus.ACCEPTED, 0)
    assert handed_back.enqueued is not None
    worker.process_task(app.tasks[TASK_NAME], ids[1])
    assert dispatch.get_event(ids[1]).attempts == 1
    assert len(app.handler.events) == 2


def test_a_purged_event_does_not_fail_the_rest_of_its_message(app: Any) -> None:
    ids = accepted_ids(2)
    events.purge(dispatch.get_event(ids[1]).created.replace(year=2100))
    ids = accepted_ids(1) + ids
    statuses = worker.process_task(app.tasks[TASK_NAME], *ids)
    assert statuses == {ids[0]: "200 OK"}
    assert len(app.handler.events) == 1
