"""The receiver's group commit, against a real SQLite file: what is stored, sent and recorded."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence

import peewee
import pytest

from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.dispatch import Acceptance
from pacifica.dispatcher.service.intake import Intake
from pacifica.dispatcher.storage import database as database_module
from pacifica.dispatcher.storage import events as stored_events
from pacifica.dispatcher.storage import prompt_write_transaction
from pacifica.dispatcher.storage.schema import EventRecord
from pacifica.dispatcher.testing import event_from_dict
from tests.conftest import outbox_of


def events(*ids: str) -> list[ReceivedEvent]:
    return [
        event_from_dict({"specversion": "1.0", "id": i, "type": "t", "source": "s"}) for i in ids
    ]


def test_concurrent_requests_are_stored_sent_and_recorded_as_sent(
    sqlite_db: peewee.Database,
) -> None:
    sent: list[str] = []

    def publish(ids: list[str]) -> list[str]:
        sent.extend(ids)
        return ids

    intake = Intake(outbox_of(publish))
    results: list[str] = []

    def request(number: int) -> None:
        [accepted] = intake.submit(events(f"e{number}"))
        results.append(accepted.uuid)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert intake.drain()
    assert sorted(sent) == sorted(results)
    assert all(dispatch.get_event(uuid).enqueued is not None for uuid in results)


def test_a_broker_refusing_messages_leaves_them_unmarked_for_the_sweeper(
    sqlite_db: peewee.Database,
) -> None:
    def broker_down(ids: list[str]) -> list[str]:
        raise ConnectionError("broker down")

    intake = Intake(outbox_of(broker_down))
    [accepted] = intake.submit(events("e1"))
    assert intake.drain()
    assert dispatch.get_event(accepted.uuid).enqueued is None
    assert stored_events.claim_stranded(0, 3600) == [accepted.uuid]


def test_one_failing_request_does_not_fail_the_others_committed_with_it(
    sqlite_db: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests queued behind a slow commit share the next one; only the bad one fails."""
    real_accept_many = dispatch.accept_many
    first_commit_started, release_first_commit = threading.Event(), threading.Event()

    def accept_many(groups: Sequence[Sequence[ReceivedEvent]]) -> list[list[Acceptance]]:
        if any(e.id == "slow" for group in groups for e in group):
            first_commit_started.set()
            release_first_commit.wait(10)
        if any(e.id == "bad" for group in groups for e in group):
            raise RuntimeError("this event breaks the insert")
        return real_accept_many(groups)

    monkeypatch.setattr(dispatch, "accept_many", accept_many)
    intake = Intake(outbox_of(lambda ids: ids))
    outcomes: dict[str, object] = {}

    def request(event_id: str) -> None:
        try:
            outcomes[event_id] = intake.submit(events(event_id))[0].created
        except RuntimeError as exc:
            outcomes[event_id] = exc

    slow = threading.Thread(target=request, args=("slow",))
    slow.start()
    assert first_commit_started.wait(10)
    queued = [threading.Thread(target=request, args=(i,)) for i in ("good", "bad")]
    for thread in queued:
        thread.start()
    deadline = time.monotonic() + 10
    while intake._writes.qsize() < 2:  # both wait behind the slow commit
        assert time.monotonic() < deadline, "the two requests never queued"
        threading.Event().wait(0.01)
    release_first_commit.set()
    for thread in [slow, *queued]:
        thread.join(10)
    assert (outcomes["slow"], outcomes["good"]) == (True, True)
    assert isinstance(outcomes["bad"], RuntimeError)
    assert intake.drain()
    stored = {r.event_id for r in EventRecord.select()}
    assert stored == {"slow", "good"}


def busy_timeout(database: peewee.Database) -> int:
    return int(database.execute_sql("PRAGMA busy_timeout").fetchone()[0])


def test_a_request_waiting_for_a_workers_write_lock_is_stored_once_the_lock_is_free(
    sqlite_db: peewee.Database,
) -> None:
    worker = sqlite3.connect(sqlite_db.database, isolation_level=None, check_same_thread=False)
    worker.execute("BEGIN IMMEDIATE")
    intake = Intake(outbox_of(lambda ids: ids))
    answers: list[list[Acceptance]] = []
    request = threading.Thread(target=lambda: answers.append(intake.submit(events("locked"))))
    request.start()
    try:
        request.join(0.3)  # it cannot finish while the lock is held
        assert request.is_alive()
        assert not answers
    finally:
        worker.execute("ROLLBACK")
        worker.close()
    request.join(10)
    assert [a.created for a in answers[0]] == [True]
    assert stored_events.existing_ids([("s", "locked")]) == {("s", "locked"): answers[0][0].uuid}
    assert busy_timeout(sqlite_db) == database_module.SQLITE_BUSY_MS


def test_a_write_lock_held_past_the_busy_timeout_fails_the_transaction(
    sqlite_db: peewee.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "SQLITE_BUSY_MS", 50)
    worker = sqlite3.connect(sqlite_db.database, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(peewee.OperationalError, match="locked"), prompt_write_transaction():
            pass
    finally:
        worker.execute("ROLLBACK")
        worker.close()
    assert busy_timeout(sqlite_db) == 50
