"""Ordinary production faults (issue 11, findings 1-5): every accepted event is still processed.

Each test injects one fault into real processes and checks what the README's
Reliability section promises. They share what they can: one private PostgreSQL
cluster for the module (the restart test stops and starts it, which disturbs
nothing else), the shared Redis, and the harness in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import service_required
from tests.integration.conftest import Deployment, ManagedProcess, event, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = {"Content-Type": "application/cloudevents-batch+json"}
FINAL_CODES = {200, 422, 500}  # EventStatus values of final events, as stored


# --- a private PostgreSQL cluster -----------------------------------------------------------


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this module's own (initdb + pg_ctl), which a test may restart."""

    bindir: Path
    root: Path
    port: int
    as_postgres: list[str]

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def _run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_postgres, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=100"
        )
        log = self.root / "server.log"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        status = subprocess.run(
            [*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"],
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def sql(self, statement: str, database: str = "postgres") -> list[list[str]]:
        """Rows of one statement, run with psql (no driver needed in the test process)."""
        out = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def create_database(self) -> str:
        """A fresh database in this cluster; its URL."""
        name = f"faults_{uuid.uuid4().hex[:12]}"
        self.sql(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """initdb + pg_ctl a cluster on a free port, as the postgres user when run as root."""
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    bindir = next((b for b in reversed(bindirs) if (b / "pg_ctl").exists()), None)
    if bindir is None or shutil.which("psql") is None:
        service_required("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) or psql missing")
    assert bindir is not None
    cleanup: Path | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root; pytest's tmp dirs are 0700 root
        if shutil.which("runuser") is None:
            service_required("runuser is needed to start PostgreSQL as postgres")
        root = cleanup = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        shutil.chown(root, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    else:
        root, as_postgres = tmp_path_factory.mktemp("pg"), []
    cluster = PrivatePostgres(bindir, root, free_port(), as_postgres)
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


# --- processes ------------------------------------------------------------------------------


def running(pid: int) -> bool:
    """True while the process exists and is neither a zombie nor dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The direct children of a process (running or not), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def describe_tree(pid: int, depth: int = 0) -> str:
    state = "running" if running(pid) else "dead or zombie"
    lines = [f"{'  ' * depth}{pid} ({state})"]
    lines += [describe_tree(child, depth + 1) for child in children(pid)]
    return "\n".join(lines)


def logs(deployment: Deployment, lines: int = 15) -> str:
    """The last log lines worth reading of each process: no access log, no traceback frames."""
    parts = []
    for proc in deployment.processes:
        text = proc.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [t for t in text if t[:1] not in (" ", "^", "") and "cherrypy.access" not in t]
        parts.append(f"--- {proc.log_path.name}\n" + "\n".join(kept[-lines:]))
    return "\n".join(parts)


def status_of(deployment: Deployment, task_id: str) -> str:
    reply = reply_of("GET", f"{deployment.url}/status/{task_id}", timeout=10)
    return reply.body.strip('"') if reply.code == 200 else f"<{reply}>"


def wait_statuses(deployment: Deployment, expected: dict[str, str], timeout: float) -> None:
    """Wait until each event has its expected status; fail with what they have and the logs."""
    try:
        wait_for(
            lambda: all(status_of(deployment, t) == s for t, s in expected.items()),
            timeout,
            0.2,
            f"{len(expected)} event(s) to reach {sorted(set(expected.values()))}",
        )
    except AssertionError as exc:
        now = {t: status_of(deployment, t) for t in expected}
        raise AssertionError(f"{exc}\nnow: {now}\n{logs(deployment)}") from None


@dataclass(frozen=True)
class Reply:
    """One request's answer, or (``code`` None) the error it got instead."""

    code: int | None
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.code} after {self.seconds:.1f}s: {self.body[:200]}"


def reply_of(method: str, url: str, timeout: float = 15, **kwargs: Any) -> Reply:
    """The answer to one request; a timeout or refused connection is an answer too."""
    began = time.monotonic()
    try:
        response = requests.request(method, url, timeout=timeout, **kwargs)
    except requests.RequestException as exc:
        return Reply(None, repr(exc), seconds=time.monotonic() - began)
    headers = dict(response.headers)
    return Reply(response.status_code, response.text, headers, time.monotonic() - began)


def production_on(
    deployments: Callable[..., Deployment], database_url: str, broker_url: str, **env: str
) -> Deployment:
    """PostgreSQL + Redis: schema synced, receiver running (the test starts its workers)."""
    deployment = deployments(DATABASE_URL=database_url, BROKER_URL=broker_url, **env)
    synced = deployment.cli("db", "sync")
    assert synced.returncode == 0, synced.stderr
    deployment.start_server()
    return deployment


# --- 1. PostgreSQL restart under a burst ----------------------------------------------------


@dataclass
class Answer:
    phase: str
    code: int | None
    retry_after: str | None
    task_id: str | None
    detail: str


def backoff(retry_after: str | None) -> float:
    """How long the burst's client waits after an error: Retry-After, at most 0.2 s."""
    try:
        return min(float(retry_after or 0.05), 0.2)
    except ValueError:  # an HTTP date
        return 0.2


@dataclass
class Burst:
    """Threads posting one event per request until stopped, recording every answer."""

    url: str
    threads: int = 2
    phase: str = "before"
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Burst:
        for n in range(self.threads):
            thread = threading.Thread(target=self._post_until_stopped, name=f"burst-{n}")
            thread.start()
            self._running.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(60)

    def _post_until_stopped(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                answer = self._post(session)
                self.answers.append(answer)
                if answer.task_id is None:  # a client backs off after an error (Retry-After)
                    self._stop.wait(backoff(answer.retry_after))

    def _post(self, session: requests.Session) -> Answer:
        phase = self.phase
        try:
            response = session.post(f"{self.url}/receive", json=event("ok"), timeout=30)
        except requests.RequestException as exc:
            return Answer(phase, None, None, None, repr(exc))
        task_id = response.json() if response.status_code in (200, 202) else None
        retry_after = response.headers.get("Retry-After")
        return Answer(phase, response.status_code, retry_after, task_id, response.text[:200])

    def accepted(self, phase: str | None = None) -> list[str]:
        return [
            a.task_id
            for a in list(self.answers)
            if a.task_id is not None and (phase is None or a.phase == phase)
        ]

    def codes(self, phase: str) -> Counter[int | None]:
        return Counter(a.code for a in list(self.answers) if a.phase == phase)


def test_postgresql_restart_under_a_burst_loses_nothing_and_needs_no_restarts(
    deployments: Callable[..., Deployment], private_postgres: PrivatePostgres, redis_url: str
) -> None:
    """``pg_ctl restart -m fast`` (in its two halves, so requests land while it is down).

    Every event answered 2xx reaches a final status; while PostgreSQL is down
    the receiver answers 503 with Retry-After, never 500; the receiver and
    the workers carry on afterwards without being restarted.
    """
    database_url = private_postgres.create_database()
    deployment = production_on(deployments, database_url, redis_url)
    worker = deployment.start_worker(concurrency=2)
    server = deployment.processes[0]
    database = database_url.rsplit("/", 1)[1]

    def statuses(task_ids: list[str]) -> Counter[int]:
        rows = private_postgres.sql("SELECT uuid, status FROM dispatcher_event", database)
        stored = {row[0]: int(row[1]) for row in rows}
        return Counter(stored.get(t, -1) for t in task_ids)

    burst = Burst(deployment.url).start()
    problems: list[str] = []
    try:
        wait_for(
            lambda: statuses(burst.accepted()).get(200, 0) >= 50,
            60,
            0.2,
            "the worker to process a first part of the burst",
        )
        burst.phase = "down"
        private_postgres.stop("fast")
        down = reply_of("POST", f"{deployment.url}/receive", json=event("ok"))
        burst.phase = "restarting"
        private_postgres.start()
        burst.phase = "after"
        try:
            wait_for(
                lambda: len(burst.accepted("after")) >= 50,
                30,
                0.2,
                "the receiver to accept events again",
            )
        except AssertionError as exc:
            problems.append(
                f"receiver did not recover: {exc}; answers after: {burst.codes('after')}"
            )
    finally:
        burst.stop()
        if not private_postgres.running():  # the module's other tests need it back
            private_postgres.start()

    if down.code != 503 or "Retry-After" not in down.headers:
        problems.append(
            f"while PostgreSQL was down POST /receive answered {down} "
            f"(Retry-After: {down.headers.get('Retry-After')}); want 503 with Retry-After"
        )
    errors = [a for a in burst.answers if a.code not in (200, 202, 503)]
    if errors:
        by_phase = Counter((a.phase, a.code) for a in errors)
        problems.append(
            f"{len(errors)} answers were errors, not 2xx/503: {dict(by_phase)}; first: {errors[0]}"
        )
    no_retry_after = [a for a in burst.answers if a.code == 503 and not a.retry_after]
    if no_retry_after:
        problems.append(f"{len(no_retry_after)} 503 answers had no Retry-After")
    accepted = burst.accepted()
    try:
        wait_for(
            lambda: set(statuses(accepted)) <= FINAL_CODES,
            60,
            0.5,
            f"all {len(accepted)} accepted events to reach a final status",
        )
    except AssertionError as exc:
        problems.append(f"{exc}; stored statuses of accepted events: {dict(statuses(accepted))}")
    if not (server.alive() and worker.alive()):
        problems.append(f"a process exited: server {server.alive()}, worker {worker.alive()}")
    answers = {
        phase: dict(burst.codes(phase)) for phase in ("before", "down", "restarting", "after")
    }
    assert not problems, "\n".join([*problems, f"answers by phase: {answers}", logs(deployment)])


# --- 2. an empty message file in the embedded broker's queue ---------------------------------


def test_embedded_worker_survives_an_empty_message_file(embedded: Deployment) -> None:
    """kombu's filesystem transport creates a message file, then writes it: a reader can see it empty.

    The worker must survive it (or ``serve`` must restart the worker), and
    events posted before and after must still be processed.
    """
    server = embedded.processes[0]
    queue = Path(embedded.env["DISPATCHER_DATA_DIR"]) / "broker" / "queue"
    embedded.wait_status(embedded.post(event("ok")).json(), "200 OK")  # the worker is up
    before = embedded.post(event("ok")).json()
    empty = queue / f"0_{uuid.uuid4()}.celery.msg"  # sorts first: the next message read
    empty.touch()
    wait_for(lambda: not empty.exists(), 30, what="the worker to take the empty message file")
    after = embedded.post(event("ok")).json()
    try:
        wait_statuses(embedded, {before: "200 OK", after: "200 OK"}, timeout=60)
    except AssertionError as exc:
        tree = describe_tree(server.process.pid) if server.process else "?"
        raise AssertionError(f"{exc}\nserve's process tree:\n{tree}") from None


# --- 3. a poison event: one document nested ~950 deep -----------------------------------------

# JSON nesting of the poison event's document (the batch array adds one). Today, on this
# interpreter's default recursion limit: a receiver accepts up to ~980, a worker's claim
# fails from ~955 on SQLite (~950 on PostgreSQL), and reading such an event back fails too.
POISON_DEPTH = 965


def poison_batch() -> tuple[bytes, list[dict[str, Any]]]:
    """The batch's body (a normal event, one nested POISON_DEPTH deep, another normal one)
    and its two normal events."""
    normal = [event("ok"), event("ok")]
    deep = "[" * (POISON_DEPTH - 1) + "1" + "]" * (POISON_DEPTH - 1)  # the event object is 1
    poison = json.dumps(event("ok", f"poison-{uuid.uuid4().hex}"))
    poison = poison.replace('"data": ["ok"]', f'"data": {deep}')
    assert deep in poison
    body = f"[{json.dumps(normal[0])}, {poison}, {json.dumps(normal[1])}]"
    return body.encode(), normal


@pytest.fixture(params=["sqlite", "postgresql"])
def poison_target(
    request: pytest.FixtureRequest, deployments: Callable[..., Deployment]
) -> Deployment:
    """The embedded default (SQLite), or PostgreSQL (the private cluster) + Redis with a worker."""
    if request.param == "sqlite":
        deployment = deployments()
        deployment.start_server()
        return deployment
    cluster: PrivatePostgres = request.getfixturevalue("private_postgres")
    redis_url: str = request.getfixturevalue("redis_url")
    deployment = production_on(deployments, cluster.create_database(), redis_url)
    deployment.start_worker()
    return deployment


def unreadable(deployment: Deployment, expected: dict[str, str]) -> list[str]:
    """What the read endpoints fail to answer for these events (and failed ones' reasons)."""
    problems = []
    for task_id, status in expected.items():
        for path in (f"/status/{task_id}", f"/get/{task_id}"):
            reply = reply_of("GET", deployment.url + path, timeout=15)
            if reply.code != 200:
                problems.append(f"GET {path} answered {reply}")
            elif path.startswith("/get") and status.startswith("500"):
                described = json.loads(reply.body)
                if not (described["exceptionType"] and described["exceptionValue"]):
                    problems.append(f"the failed poison event {task_id} has no reason: {reply}")
    listing = reply_of("GET", f"{deployment.url}/?limit=10", timeout=15)
    if listing.code != 200:
        problems.append(f"GET / answered {listing}")
    return problems


def test_poison_event_is_refused_or_failed_alone_and_the_service_keeps_answering(
    poison_target: Deployment,
) -> None:
    """Either the receiver refuses the batch with 400 (a documented depth limit), or it stores
    it and the poison event alone ends ``500`` with a reason, while its neighbours finish.
    Either way the receiver keeps answering: new events, /status, /get and ``GET /``.
    """
    deployment = poison_target
    body, normal = poison_batch()
    received = reply_of("POST", f"{deployment.url}/receive", data=body, headers=BATCH, timeout=30)
    problems: list[str] = []
    expected: dict[str, str] = {}
    if received.code == 400:  # refused whole: the client sends the good events again
        resent = deployment.post(normal, BATCH)
        assert resent.status_code == 202, resent.text
        expected = dict.fromkeys(resent.json(), "200 OK")
    elif received.code == 202:
        first, poison, last = json.loads(received.body)
        expected = {first: "200 OK", poison: "500 Internal Server Error", last: "200 OK"}
    else:
        problems.append(f"the poison batch was answered {received}; want 202 or 400")

    try:
        wait_statuses(deployment, expected, timeout=30)
    except AssertionError as exc:
        problems.append(str(exc))
    # After the worker met the poison: on SQLite it used to keep the write lock for good.
    fresh = reply_of("POST", f"{deployment.url}/receive", json=event("ok"), timeout=45)
    if fresh.code == 202:
        fresh_id = json.loads(fresh.body)
        try:
            wait_statuses(deployment, {fresh_id: "200 OK"}, timeout=30)
        except AssertionError as exc:
            problems.append(f"a new event posted after the poison: {exc}")
    else:
        problems.append(f"POST /receive of a new event after the poison answered {fresh}")
    problems += unreadable(deployment, expected)
    assert not problems, "\n".join(problems)


# --- 4. Redis stopped for 10 s under a running worker ------------------------------------------

OUTAGE = 10.0


def test_a_redis_outage_leaves_every_worker_process_alive(
    deployments: Callable[..., Deployment],
    postgres_url: str,
    redis_server: Callable[[], ManagedProcess],
    tmp_path: Path,
) -> None:
    """Stop Redis for 10 s under a worker (concurrency 2) that is running a handler, which
    finishes during the outage: afterwards the worker's main process and both pool
    processes are alive, and that event and new ones are processed."""
    broker = redis_server()
    port = redis_server.port  # type: ignore[attr-defined]
    deployment = production_on(deployments, postgres_url, f"redis://127.0.0.1:{port}/0")
    worker = deployment.start_worker(concurrency=2)
    assert worker.process is not None
    main = worker.process.pid
    slow = deployment.post(event("slow", dir=str(tmp_path))).json()
    started = tmp_path / "started"
    wait_for(lambda: started.exists() and started.read_text().split(), 60, what="the handler")
    pool = wait_for(
        lambda: [c for c in children(main) if running(c)] if len(children(main)) >= 2 else [],
        30,
        what="the worker's pool processes",
    )
    broker.kill()
    lost_at = time.monotonic()
    wait_for(
        lambda: "Connection to broker lost" in worker.log_tail(40) or not worker.alive(),
        30,
        0.1,
        "the worker to notice the outage",
    )
    (tmp_path / "release").touch()  # the handler finishes while the broker is away
    # Hold the outage for OUTAGE seconds (a duration under test, polled, not a guess).
    wait_for(lambda: time.monotonic() - lost_at >= OUTAGE, OUTAGE + 5, 0.2, "the outage")
    redis_server()
    problems: list[str] = []
    after = reply_of("POST", f"{deployment.url}/receive", json=event("ok"))
    expected = {slow: "200 OK"}
    if after.code == 202:
        expected[json.loads(after.body)] = "200 OK"
    else:
        problems.append(f"POST /receive after the outage answered {after}")
    try:
        wait_statuses(deployment, expected, timeout=60)
    except AssertionError as exc:
        problems.append(f"events after the outage: {exc}")
    if not running(main):
        problems.append(f"the worker's main process {main} exited: {worker.process.poll()}")
    dead = [pid for pid in pool if not running(pid)]
    if dead:
        problems.append(f"pool process(es) {dead} of {pool} died")
    assert not problems, "\n".join([*problems, describe_tree(main), logs(deployment, 25)])


# --- 5. kill -9 of a whole worker in the middle of a slow handler ------------------------------


def test_a_killed_workers_event_is_finished_by_another_worker_within_a_minute(
    deployments: Callable[..., Deployment],
    private_postgres: PrivatePostgres,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """SIGKILL a worker (main process and pool) while its handler runs: a second worker
    finishes the event within 60 s, with the default PROCESSING_LEASE (an hour)."""
    deployment = production_on(deployments, private_postgres.create_database(), redis_url)
    assert "PROCESSING_LEASE" not in deployment.env  # the default: the point of this test
    first = deployment.start_worker()
    task_id = deployment.post(event("slow", dir=str(tmp_path))).json()
    started = tmp_path / "started"
    wait_for(lambda: started.exists() and started.read_text().split(), 60, what="the handler")
    first.kill()  # SIGKILL to the worker's whole process group: nothing is acknowledged
    (tmp_path / "release").touch()  # the handler, run again, finishes at once
    deployment.start_worker()
    wait_statuses(deployment, {task_id: "200 OK"}, timeout=60)
    assert len(started.read_text().split()) == 2
