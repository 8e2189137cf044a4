"""Replays with a worker killed half way (issue 16): to a real local HTTP target, and a route's
failed runs run again on real Celery workers."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pacifica.dispatcher.storage import open_database, write_transaction
from pacifica.dispatcher.storage.events import NewEvent, insert_events
from pacifica.dispatcher.storage.pacing import SLACK
from pacifica.dispatcher.storage.schema import (
    EventRecord,
    ReplayRun,
    RouteRun,
    WorkerBeat,
    database_proxy,
)
from pacifica.dispatcher.storage.subscriptions import insert_subscription
from pacifica.dispatcher.storage.values import EventStatus, RunStatus
from tests.conftest import StubRequest, StubServer
from tests.integration.conftest import Deployment, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORED = 1000
RATE = 20.0  # deliveries per second: below what the workers manage, so the throttle binds
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
PICK = '$[?(@["data"]["pick"] = true)]'


def new_event(
    document: dict[str, Any], created: datetime, key: uuid.UUID | None = None
) -> NewEvent:
    """A CloudEvents 1.0 document as a row to store, created at ``created``."""
    return NewEvent(
        key or uuid.uuid4(),
        document["id"],
        document["source"],
        document["type"],
        "1.0",
        None,
        "application/json",
        document,
        created,
    )


def store_events(database_url: str) -> set[str]:
    """1,000 processed events, one a second from START; return the ids a replay selects:
    created in [START+100 s, START+900 s) and ``pick`` (every n with n % 4 == 0)."""
    open_database(database_url)
    rows = []
    for n in range(STORED):
        document: dict[str, Any] = {
            "specversion": "1.0",
            "id": f"replay-{n}",
            "type": "org.example.replay",
            "source": "/tests/replay",
            "data": {"n": n, "pick": n % 4 == 0},
        }
        rows.append(new_event(document, START + timedelta(seconds=n)))
    with write_transaction():
        insert_events(rows)
    EventRecord.update(status=int(EventStatus.SUCCEEDED)).execute()  # long since processed
    database_proxy.close()
    return {f"replay-{n}" for n in range(100, 900) if n % 4 == 0}


def workers_alive(database_url: str) -> int:
    """How many workers have a heartbeat row (they are up and their housekeeping runs)."""
    open_database(database_url)
    try:
        return int(WorkerBeat.select().count())
    finally:
        database_proxy.close()


def test_replay_of_1000_stored_events_survives_a_killed_worker_exactly_once_at_the_rate(
    deployments: Callable[..., Deployment], postgres_url: str, redis_url: str
) -> None:
    arrivals: list[tuple[float, StubRequest]] = []
    lock = threading.Lock()

    def respond(request: StubRequest) -> None:
        with lock:
            arrivals.append((time.monotonic(), request))
        request.answer(200)

    target = StubServer(respond).start()
    deployment = deployments(
        DATABASE_URL=postgres_url,
        BROKER_URL=redis_url,
        WORKER_HEARTBEAT="1",
        WORKER_DEAD_AFTER="3",
        REQUEUE_AFTER="2",
    )
    try:
        synced = deployment.cli("db", "sync")
        assert synced.returncode == 0, synced.stderr
        selected = store_events(postgres_url)
        open_database(postgres_url)
        subscription = insert_subscription(
            "alice",
            {
                "name": "replay",
                "jsonpath": PICK,
                "target_url": target.url + "/hook",
                "secret": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
        )
        database_proxy.close()
        args = [
            "events",
            "replay",
            "--subscription",
            str(subscription.uuid),
            "--since",
            (START + timedelta(seconds=100)).isoformat(),
            "--until",
            (START + timedelta(seconds=900)).isoformat(),
            "--rate",
            str(RATE),
        ]
        dry = deployment.cli(*args, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith(f"{len(selected)} event(s) would be sent"), dry.stdout
        first = deployment.start_worker()
        # The throttle is measured at the target: a worker still starting would hold the
        # first messages back and then deliver them at once.
        wait_for(lambda: workers_alive(postgres_url) > 0, 60, what="the worker's heartbeat")
        pump = deployment._spawn("replay", [sys.executable, "-m", "tests.integration.app", *args])
        wait_for(lambda: len(arrivals) >= len(selected) // 2, 60, what="half the replay")
        first.kill()  # SIGKILL, whole process group: in-flight deliveries are lost
        killed_at = time.monotonic()
        deployment.start_worker()

        def received() -> set[str]:
            with lock:
                return {r.json()["id"] for _, r in arrivals}

        wait_for(lambda: received() >= selected, 120, what="every selected event")
        assert pump.process is not None
        pump.process.wait(60)
        assert pump.process.returncode == 0, pump.log_tail()
        assert f"{len(selected)}/{len(selected)} delivered, 0 failed" in pump.log_tail()
    finally:
        target.stop()

    with lock:
        seen = list(arrivals)
    replays = [(t, r) for t, r in seen if r.headers.get("webhook-replay")]
    assert len(replays) == len(seen)  # the subscription is new: every request is a replay
    ids = Counter(r.json()["id"] for _, r in replays)
    assert set(ids) == selected  # every selected event, none of the others
    # Exactly once more: one delivery (one webhook-id) per event; a request repeated after the
    # kill (sent, then the worker died before recording it) carries the same webhook-id.
    by_event: dict[str, set[str]] = {}
    for _, r in replays:
        by_event.setdefault(r.json()["id"], set()).add(r.headers["webhook-id"])
    assert all(len(hooks) == 1 for hooks in by_event.values())
    assert sum(ids.values()) - len(ids) <= 8  # repeats only from in-flight at the kill
    # The rate: before the kill no second holds more than RATE (plus one tick's worth), and
    # the whole replay takes at least as long as the schedule.
    before = [t for t, _ in replays if t < killed_at]
    start = before[0]
    per_second = Counter(int(t - start) for t in before)
    assert max(per_second.values()) <= RATE * 1.15 + 5, per_second
    span = replays[-1][0] - start
    print(  # the numbers BENCHMARKS.md quotes (pytest -s)
        f"replay: {len(ids)} events, {sum(ids.values()) - len(ids)} repeated, span {span:.1f} s, "
        f"busiest second before the kill {max(per_second.values())}, "
        f"done {replays[-1][0] - killed_at:.1f} s after the kill"
    )
    assert span >= (len(selected) - 1) / RATE * 0.9


ROUTE_STORED = 400
ROUTE_RATE = 10.0  # runs per second


def store_route_runs(database_url: str, folder: Path) -> set[str]:
    """400 events one a second from START, each with a run of route ``flaky``: failed for
    odd n, succeeded for even n; return the ids a failed-runs replay of
    [START+100 s, START+340 s) selects (the odd ones there: 120)."""
    open_database(database_url)
    rows, runs = [], []
    for n in range(ROUTE_STORED):
        document: dict[str, Any] = {
            "specversion": "1.0",
            "id": f"flaky-{n}",
            "type": "org.example.flaky",
            "source": "/tests/route-replay",
            "data": {"n": n, "dir": str(folder), "fail": n % 2 == 1},
        }
        key = uuid.uuid4()
        created = START + timedelta(seconds=n)
        rows.append(new_event(document, created, key))
        status = RunStatus.FAILED if n % 2 else RunStatus.SUCCEEDED
        runs.append(
            {
                "event": key,
                "route": "flaky",
                "handler": "FlakyEventHandler",
                "status": int(status),
                "attempts": 1,
                "started": created,
                "finished": created,
            }
        )
    with write_transaction():
        insert_events(rows)
        RouteRun.insert_many(runs).execute()
    failed = [r["event"] for r in runs if r["status"] == int(RunStatus.FAILED)]
    EventRecord.update(status=int(EventStatus.SUCCEEDED), attempts=1).execute()
    EventRecord.update(status=int(EventStatus.FAILED)).where(EventRecord.uuid.in_(failed)).execute()
    database_proxy.close()
    return {f"flaky-{n}" for n in range(100, 340) if n % 2 == 1}


def runs_of(folder: Path) -> list[tuple[str, float]]:
    """The handler's side effects: (event id, time) per run, in order."""
    path = folder / "runs"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(line.split()[0], float(line.split()[1])) for line in lines if line.count(" ") == 1]


def test_route_replay_of_failed_runs_survives_a_killed_worker_once_each_at_the_rate(
    deployments: Callable[..., Deployment], postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "flaky"
    folder.mkdir()
    deployment = deployments(
        DATABASE_URL=postgres_url,
        BROKER_URL=redis_url,
        WORKER_HEARTBEAT="1",
        WORKER_DEAD_AFTER="3",
        REQUEUE_AFTER="2",
    )
    synced = deployment.cli("db", "sync")
    assert synced.returncode == 0, synced.stderr
    selected = store_route_runs(postgres_url, folder)
    (folder / "fixed").touch()  # the handler is fixed: the replay's runs succeed
    args = [
        "events", "replay", "--route", "flaky",
        "--since", (START + timedelta(seconds=100)).isoformat(),
        "--until", (START + timedelta(seconds=340)).isoformat(),
        "--rate", str(ROUTE_RATE),
    ]  # fmt: skip
    dry = deployment.cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"{len(selected)} failed run(s) of route 'flaky'"), dry.stdout
    stored = deployment.cli(*args, "--no-wait")  # only the workers publish it
    assert stored.returncode == 0, stored.stderr
    first = deployment.start_worker()
    wait_for(lambda: len(runs_of(folder)) >= len(selected) // 2, 120, what="half the replay")
    first.kill()  # SIGKILL, whole process group: its publisher and its runs in flight die
    killed_at = time.time()
    deployment.start_worker()
    wait_for(lambda: {e for e, _ in runs_of(folder)} >= selected, 120, what="every run")

    seen = runs_of(folder)
    counts = Counter(e for e, _ in seen)
    assert set(counts) == selected  # every selected run again, none of the others
    repeated = sum(counts.values()) - len(counts)
    assert repeated <= 2  # at most the runs in flight at the kill (two worker processes)
    open_database(postgres_url)
    ran = RouteRun.select().where(RouteRun.status == int(RunStatus.SUCCEEDED)).count()
    assert ran == ROUTE_STORED // 2 + len(selected)  # the replayed runs are recorded succeeded
    published = sorted(r.enqueued.timestamp() for r in ReplayRun.select())  # the throttle's
    database_proxy.close()
    ran_at = [t for _, t in seen]
    parts = [[t for t in ts if (t < killed_at) is first] for ts in (published, ran_at)
             for first in (True, False)]  # fmt: skip
    busiest = [max(Counter(int(t - part[0]) for t in part).values()) for part in parts]
    rates = [(len(part) - 1) / (part[-1] - part[0]) for part in parts[2:]]
    print(  # the numbers BENCHMARKS.md quotes (pytest -s)
        f"route replay: {len(counts)} runs, {repeated} repeated; busiest second published "
        f"{busiest[0]} before the kill, {busiest[1]} after; runs {rates[0]:.2f}/s before the "
        f"kill, {rates[1]:.2f}/s after the restart (busiest second {busiest[2]}, "
        f"{busiest[3]}), resumed {parts[3][0] - killed_at:.1f} s after the kill"
    )
    # The throttle holds whoever publishes, and after the restart nothing overdue goes at
    # once; the runs keep the rate on average (a worker's processes warming up can hold the
    # first messages back for a moment and then run them together).
    # A turn publishes at most SLACK seconds of the schedule: a second can hold that more.
    assert all(b <= ROUTE_RATE * (1 + SLACK) + 2 for b in busiest[:2]), busiest
    assert all(ROUTE_RATE * 0.8 <= r <= ROUTE_RATE * 1.1 for r in rates), rates
    assert all(b <= ROUTE_RATE * 2 for b in busiest[2:]), busiest
