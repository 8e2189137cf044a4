"""Soak under faults (issue 11): N events while workers are killed and the database and broker restart.

Run on demand from the repository root (not part of CI, not collected by pytest)::

    .venv/bin/python -m benchmarks.bench_soak                         # 100,000 events, both
    .venv/bin/python -m benchmarks.bench_soak --events 2000           # smoke run
    .venv/bin/python -m benchmarks.bench_soak --scenario postgres --json /tmp/soak.json

Scenarios (each gets fresh processes, a fresh database and its own work folder):

embedded
    ``python -m benchmarks.bench_app serve`` with no DATABASE_URL or BROKER_URL:
    SQLite and the filesystem broker, with the worker that ``serve`` starts and
    supervises. Faults: at 30 % of the events ``kill -9`` of the whole embedded
    worker (its main process and pool children; they share ``serve``'s process
    group, so the tree is killed process by process), which ``serve`` must
    restart; at 60 % ``kill -9`` of one pool child, which the worker must replace.
postgres
    ``bench_app serve --no-worker`` plus two ``bench_app worker`` processes
    (``--worker-concurrency`` pool processes each) on a private PostgreSQL
    cluster (initdb + pg_ctl as the postgres user, in a temporary folder) and a
    private redis-server. Faults: at 25 % ``kill -9`` of worker-1's process
    group, restarted 10 s later (as a container restart policy would); at 50 %
    ``pg_ctl restart -m fast``; at 75 % Redis stopped for 10 s, then started
    again on the same port (empty: it does not persist).

Client threads keep posting one event per request through every fault. An
answer that is not 2xx (503 + Retry-After, a refused or dropped connection) is
followed by the same event again after Retry-After (or a short pause); the
same id answered 200 means it was already stored. Accepted = ids answered
2xx. At the end the script waits (``--drain-timeout``) until every accepted
event has a final status in the database (200, 422 or 500), then reports
accepted, final, not final, handled (from the recording handler's file),
events handled more than once (allowed only around a fault: each is attributed
to the nearest fault), answers by status, wall time, throughput, and VmRSS /
VmHWM of the receiver and each worker main process at start, after the first
10 % and at the end. Exit status 1 if accepted != final, a process died
without recovery, or a scenario failed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_app import RECORD_ENV
from benchmarks.bench_service import (
    HTTP_ERRORS,
    ROOT,
    Managed,
    Processes,
    RecordFile,
    base_env,
    event_body,
    free_port,
    http_ready,
    run_checked_env,
    start_redis,
    wait_until,
)

SCENARIOS = ("embedded", "postgres")
FINAL_STATUSES = {200, 422, 500}
WARMUP_EVENTS = 20
PYTHON = sys.executable
APP = [PYTHON, "-m", "benchmarks.bench_app"]


# --- processes seen through /proc ----------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (any thread of it), from /proc/*/stat."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB ({} once it is gone)."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and its descendants (collected first); the pids killed."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children_of(current))
    for victim in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return tree


# --- posting through faults ----------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients got: accepted ids with their task ids, and every answer by kind."""

    accepted: dict[str, str] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    resent: int = 0  # requests that repeated an event after a non-2xx answer or an error
    resent_already_stored: int = 0  # of those, answered 200 (the first attempt had stored it)
    gave_up: list[str] = field(default_factory=list)
    first_post: float = 0.0
    last_accept: float = 0.0


class Poster:
    """Client threads posting each id until it is answered 2xx, honouring Retry-After."""

    def __init__(self, port: int, ids: list[str], threads: int, give_up_after: float) -> None:
        self.port = port
        self.threads = threads
        self.give_up_after = give_up_after
        self.tally = Tally()
        self._pending = iter(ids)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running: list[threading.Thread] = []

    @property
    def accepted(self) -> int:
        """How many ids were answered 2xx so far."""
        return len(self.tally.accepted)

    def start(self) -> None:
        """Start posting."""
        self.tally.first_post = time.time()
        for number in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"post-{number}", daemon=True)
            thread.start()
            self._running.append(thread)

    def done(self) -> bool:
        """True once every thread finished."""
        return not any(thread.is_alive() for thread in self._running)

    def stop(self) -> None:
        """Ask the threads to stop and wait for them (bounded)."""
        self._stop.set()
        for thread in self._running:
            thread.join(120)

    def _next(self) -> str | None:
        with self._lock:
            return next(self._pending, None)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            while not self._stop.is_set() and (event_id := self._next()) is not None:
                self._post_until_accepted(conn, event_id)
        finally:
            conn.close()

    def _post_until_accepted(self, conn: http.client.HTTPConnection, event_id: str) -> None:
        body = event_body(event_id)
        headers = {"Content-Type": "application/json"}
        deadline = time.monotonic() + self.give_up_after
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            pause = 0.5
            try:
                conn.request("POST", "/receive", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                kind = str(response.status)
                if 200 <= response.status < 300:
                    with self._lock:
                        self.tally.answers[kind] += 1
                        self.tally.accepted[event_id] = str(json.loads(payload))
                        self.tally.last_accept = time.time()
                        if attempt > 1:
                            self.tally.resent += 1
                            self.tally.resent_already_stored += response.status == 200
                    return
                if response.status == 503:
                    pause = retry_after(response.getheader("Retry-After"))
            except HTTP_ERRORS as exc:
                conn.close()
                kind = type(exc).__name__
            with self._lock:
                self.tally.answers[kind] += 1
                if attempt > 1:
                    self.tally.resent += 1
            if time.monotonic() + pause > deadline:
                with self._lock:
                    self.tally.gave_up.append(event_id)
                return
            self._stop.wait(pause)


def retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (seconds form; 1 s if absent or a date)."""
    try:
        return max(0.0, float(value or 1))
    except ValueError:
        return 1.0


# --- a private PostgreSQL cluster ---------------------------------------------------------------


@dataclass
class Postgres:
    """initdb + pg_ctl in a temporary folder, as the postgres user when run as root.

    The same recipe as ``tests/integration/test_faults.py`` (``PrivatePostgres``);
    the benchmark needs restart and a psql query on top.
    """

    bindir: Path
    root: Path
    port: int
    as_postgres: list[str]

    @classmethod
    def create(cls) -> Postgres:
        """A new, running cluster on a free port."""
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
        bindir = next((b for b in reversed(bindirs) if (b / "pg_ctl").exists()), None)
        if bindir is None or shutil.which("psql") is None:
            raise RuntimeError(
                "PostgreSQL server binaries (/usr/lib/postgresql/*/bin) or psql missing"
            )
        root = Path(tempfile.mkdtemp(prefix="soak-pg-"))
        as_postgres: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(root, "postgres", "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        cluster = cls(bindir, root, free_port(), as_postgres)
        cluster.pg(
            "initdb",
            *("-D", str(cluster.datadir), "-U", "postgres", "--auth=trust"),
            *("-E", "UTF8", "--locale=C.UTF-8"),
        )
        options = f"-p {cluster.port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        log = root / "server.log"
        cluster.pg(
            "pg_ctl", "-D", str(cluster.datadir), "-l", str(log), "-w", "-o", options, "start"
        )
        return cluster

    @property
    def datadir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    def pg(self, tool: str, *args: str) -> None:
        """Run one of the server's tools as the postgres user."""
        command = [*self.as_postgres, str(self.bindir / tool), *args]
        subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    def restart(self) -> None:
        """``pg_ctl restart -m fast`` (waits until it accepts connections again)."""
        log = str(self.root / "server.log")  # without -l the server would hold our stdout pipe
        self.pg("pg_ctl", "-D", str(self.datadir), "-l", log, "-m", "fast", "-w", "restart")

    def running(self) -> bool:
        """True while the postmaster runs."""
        command = [*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(self.datadir)]
        return (
            subprocess.run([*command, "status"], capture_output=True, check=False).returncode == 0
        )

    def stop(self) -> None:
        """Stop the cluster (immediate)."""
        if self.running():
            self.pg("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")

    def psql(self, statement: str, database: str = "postgres") -> list[list[str]]:
        """The rows of one statement."""
        out = subprocess.run(
            [
                *("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"),
                *("-p", str(self.port), "-U", "postgres", "-d", database, "-c", statement),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        return [line.split("|") for line in out.splitlines() if line]


# --- the scenarios -------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injected fault: when, what, and how long until the system was whole again."""

    name: str
    at_fraction: float
    at_accepted: int = 0
    started: float = 0.0  # time.time()
    seconds: float = 0.0  # the action itself (with any outage it includes)
    recovered_after: float | None = None  # from start until the killed part was back
    detail: str = ""


class Scenario:
    """A running system: its processes, its database, its faults."""

    name = ""
    port: int
    receiver: Managed

    def __init__(self, procs: Processes, folder: Path, args: argparse.Namespace) -> None:
        self.procs = procs
        self.folder = folder
        self.args = args
        self.record_path = folder / "handled.txt"

    def start(self) -> None:
        """Start every process and wait until the receiver answers."""
        raise NotImplementedError

    def faults(self) -> list[tuple[Fault, Callable[[Fault], None]]]:
        """The faults of this scenario, in order, with the actions that inject them."""
        raise NotImplementedError

    def statuses(self) -> dict[str, int]:
        """Stored status of every event, by event id."""
        raise NotImplementedError

    def workers(self) -> dict[str, int]:
        """The worker main processes now: name -> pid."""
        raise NotImplementedError

    def problems(self) -> list[str]:
        """Processes that are dead and were not brought back."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop what ``Processes`` does not know about."""

    def memory(self) -> dict[str, dict[str, int]]:
        """VmRSS / VmHWM (kB) of the receiver and each worker main process, with their pids."""
        pids = {"receiver": self.receiver.popen.pid, **self.workers()}
        return {name: {"pid": pid, **memory_kb(pid)} for name, pid in pids.items()}

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every process of the scenario."""
        return base_env(
            **{RECORD_ENV: str(self.record_path)},
            DISPATCHER_DATA_DIR=str(self.folder / "data"),
            PYTHONPATH=str(ROOT),
            **extra,
        )

    def start_receiver(self, env: dict[str, str], *options: str) -> None:
        """``bench_app serve`` on a free port, ready."""
        self.port = free_port()
        command = [*APP, "serve", "--port", str(self.port), *options]
        self.receiver = self.procs.start("receiver", command, env, ROOT, self.folder / "serve.log")
        wait_until(lambda: http_ready(self.port), 90, "receiver", self.receiver)


class Embedded(Scenario):
    """SQLite + the filesystem broker; ``serve`` runs and supervises the worker."""

    name = "embedded"

    def start(self) -> None:
        """Start ``serve`` and wait for its worker and pool."""
        self.start_receiver(self.env())
        wait_until(self._whole, 90, "the embedded worker and its pool", self.receiver)

    def worker_main(self) -> int | None:
        """The pid of the events' Celery worker ``serve`` runs now (beside the deliveries' one)."""
        return next(
            (
                p
                for p in children_of(self.receiver.popen.pid)
                if "celery" in cmdline(p) and "events@" in cmdline(p)
            ),
            None,
        )

    def pool(self) -> list[int]:
        """The worker's pool processes."""
        main = self.worker_main()
        return [] if main is None else [p for p in children_of(main) if alive(p)]

    def _whole(self) -> bool:
        # The embedded worker runs its handlers in threads (service.worker.worker_arguments).
        return self.worker_main() is not None

    def workers(self) -> dict[str, int]:
        """The embedded worker's main process."""
        main = self.worker_main()
        return {} if main is None else {"worker": main}

    def faults(self) -> list[tuple[Fault, Callable[[Fault], None]]]:
        """kill -9 the events' worker at 30 % and again at 60 % (it runs threads: no pool child)."""
        return [
            (Fault("kill -9 embedded worker", 0.30), self._kill_worker),
            (Fault("kill -9 embedded worker again", 0.60), self._kill_worker),
        ]

    def _kill_worker(self, fault: Fault) -> None:
        old = self.worker_main()
        if old is None:
            raise RuntimeError("no embedded worker to kill")
        fault.detail = f"killed pids {kill_tree(old)}"
        fault.seconds = time.time() - fault.started

        def replaced() -> bool:
            main = self.worker_main()
            return main is not None and main != old and self._whole()

        wait_until(replaced, 120, "serve to restart its worker", self.receiver)
        fault.recovered_after = time.time() - fault.started
        fault.detail += f"; new worker pid {self.worker_main()}"

    def statuses(self) -> dict[str, int]:
        """Read the SQLite file (read-only)."""
        path = self.folder / "data" / "dispatcher.sqlite3"
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        ) as db:
            rows = db.execute("SELECT event_id, status FROM dispatcher_event").fetchall()
        return {str(event_id): int(status) for event_id, status in rows}

    def problems(self) -> list[str]:
        """The receiver and a whole worker must be running."""
        found = []
        if self.receiver.popen.poll() is not None:
            found.append(f"serve exited ({self.receiver.popen.returncode})")
        if not self._whole():
            found.append(
                f"embedded worker not whole: main {self.worker_main()}, pool {self.pool()}"
            )
        return found


class PostgresRedis(Scenario):
    """Receiver + two workers on a private PostgreSQL cluster and a private Redis."""

    name = "postgres"

    def __init__(self, procs: Processes, folder: Path, args: argparse.Namespace) -> None:
        super().__init__(procs, folder, args)
        self.cluster: Postgres | None = None
        self.redis_port = 0
        self.database = ""
        self.worker_procs: dict[str, Managed] = {}
        self.worker_env: dict[str, str] = {}

    def start(self) -> None:
        """Cluster, database, Redis, schema, receiver, workers."""
        self.cluster = Postgres.create()
        self.database = f"soak_{uuid.uuid4().hex[:8]}"
        self.cluster.psql(f'CREATE DATABASE "{self.database}"')
        self.redis_port = start_redis(self.procs, self.folder)
        env = self.env(
            DATABASE_URL=f"postgresql://postgres@127.0.0.1:{self.cluster.port}/{self.database}",
            BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
        )
        self.worker_env = env
        run_checked_env([*APP, "db", "sync"], env, "db sync")
        self.start_receiver(env, "--no-worker")
        for name in ("worker-1", "worker-2"):
            self._start_worker(name)

    def _start_worker(self, name: str) -> None:
        concurrency = str(self.args.worker_concurrency)
        command = [*APP, "worker", "--concurrency", concurrency, "--loglevel", "INFO"]
        log = self.folder / f"{name}.log"
        self.worker_procs[name] = self.procs.start(name, command, self.worker_env, ROOT, log)

    def workers(self) -> dict[str, int]:
        """Both workers' main processes."""
        return {name: managed.popen.pid for name, managed in self.worker_procs.items()}

    def faults(self) -> list[tuple[Fault, Callable[[Fault], None]]]:
        """Worker kill at 25 %, PostgreSQL restart at 50 %, Redis outage at 75 %."""
        return [
            (Fault("kill -9 worker-1 (process group), restarted after 10 s", 0.25), self._kill),
            (Fault("pg_ctl restart -m fast", 0.50), self._restart_postgres),
            (Fault("Redis stopped for 10 s, then started (empty)", 0.75), self._redis_outage),
        ]

    def _kill(self, fault: Fault) -> None:
        victim = self.worker_procs["worker-1"]
        pool = children_of(victim.popen.pid)
        self.procs.stop(victim, signal.SIGKILL)
        fault.seconds = time.time() - fault.started
        fault.detail = f"killed group {victim.popen.pid} (pool {pool})"
        time.sleep(10)
        self._start_worker("worker-1")
        fault.recovered_after = time.time() - fault.started
        fault.detail += f"; new worker-1 pid {self.worker_procs['worker-1'].popen.pid}"

    def _restart_postgres(self, fault: Fault) -> None:
        assert self.cluster is not None
        self.cluster.restart()
        fault.seconds = fault.recovered_after = time.time() - fault.started

    def _redis_outage(self, fault: Fault) -> None:
        redis = next(m for m in self.procs.running if m.name == "redis")
        self.procs.stop(redis)
        time.sleep(10)
        start_redis(self.procs, self.folder, self.redis_port)
        fault.seconds = fault.recovered_after = time.time() - fault.started

    def statuses(self) -> dict[str, int]:
        """Query PostgreSQL with psql (retried: the query may meet the restart)."""
        assert self.cluster is not None
        for attempt in range(10):
            try:
                rows = self.cluster.psql(
                    "SELECT event_id, status FROM dispatcher_event", self.database
                )
                return {row[0]: int(row[1]) for row in rows}
            except subprocess.CalledProcessError:
                if attempt == 9:
                    raise
                time.sleep(2)
        return {}

    def problems(self) -> list[str]:
        """Receiver, both workers, Redis and PostgreSQL must be running."""
        found = []
        for name, managed in {"receiver": self.receiver, **self.worker_procs}.items():
            if managed.popen.poll() is not None:
                found.append(f"{name} exited ({managed.popen.returncode})")
            elif (
                name != "receiver"
                and len(children_of(managed.popen.pid)) < self.args.worker_concurrency
            ):
                found.append(f"{name} has pool {children_of(managed.popen.pid)}")
        if self.cluster is None or not self.cluster.running():
            found.append("PostgreSQL is not running")
        return found

    def stop(self) -> None:
        """Stop the cluster and keep its log with the others."""
        if self.cluster is None:
            return
        with contextlib.suppress(Exception):
            self.cluster.stop()
        with contextlib.suppress(OSError):
            shutil.copy(self.cluster.root / "server.log", self.folder / "postgresql.log")
        shutil.rmtree(self.cluster.root, ignore_errors=True)


# --- one run -------------------------------------------------------------------------------------


@dataclass
class SoakResult:
    """Everything measured for one scenario."""

    scenario: str
    events: int
    client_threads: int
    accepted: int = 0
    final: int = 0
    not_final: int = 0
    not_final_statuses: dict[str, int] = field(default_factory=dict)
    final_statuses: dict[str, int] = field(default_factory=dict)
    handled: int = 0
    handled_twice: int = 0
    extra_handlings: int = 0
    handled_not_accepted: int = 0
    duplicates_by_fault: dict[str, int] = field(default_factory=dict)
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)
    resent: int = 0
    resent_already_stored: int = 0
    gave_up: int = 0
    post_seconds: float = 0.0
    drain_seconds: float = 0.0
    wall_seconds: float = 0.0
    accept_rate: float = 0.0
    end_to_end_rate: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    memory: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    stack_dumps: list[str] = field(default_factory=list)
    workdir: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Accepted = final, nothing dead, no error."""
        return self.error is None and self.accepted == self.final and not self.problems


def warm_up(scenario: Scenario, record: RecordFile) -> None:
    """A few events through the whole path before measuring (not counted)."""
    ids = [f"warm-{n}" for n in range(WARMUP_EVENTS)]
    poster = Poster(scenario.port, ids, 2, 60)
    poster.start()
    poster.stop()
    if not record.wait_for(set(poster.tally.accepted), 120):
        raise RuntimeError(f"warm-up events were not handled:\n{scenario.receiver.tail()}")


def attribute(first_handled: float, faults: list[Fault]) -> str:
    """The fault nearest to when an event was first handled (within 120 s), else "none"."""
    near = [(abs(first_handled - f.started), f.name) for f in faults if f.started]
    if not near or min(near)[0] > 120:
        return "none (no fault within 120 s)"
    return min(near)[1]


def run_scenario(name: str, args: argparse.Namespace, folder: Path) -> SoakResult:
    """Start one scenario fresh, post through its faults, drain, measure, stop (always)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = SoakResult(name, args.events, args.threads, workdir=str(folder))
    procs = Processes()
    kind = Embedded if name == "embedded" else PostgresRedis
    scenario = kind(procs, folder, args)
    record = RecordFile(scenario.record_path)
    began = time.time()
    try:
        scenario.start()
        warm_up(scenario, record)
        result.memory["start"] = scenario.memory()
        ids = [f"soak-{name}-{n}" for n in range(args.events)]
        poster = Poster(scenario.port, ids, args.threads, args.give_up_after)
        pending = [
            (fault, inject)
            for fault, inject in scenario.faults()
            if not any(skip in fault.name for skip in args.skip_fault)
        ]
        sampled_10 = False
        last_log = 0.0
        poster.start()
        while not poster.done() or pending:  # a fault not reached yet still comes
            accepted = poster.accepted
            if not sampled_10 and accepted >= args.events * 0.10:
                result.memory["10%"] = scenario.memory()
                sampled_10 = True
            due = pending and accepted >= args.events * pending[0][0].at_fraction
            if pending and (due or poster.done()):
                fault, inject = pending.pop(0)
                fault.at_accepted, fault.started = accepted, time.time()
                logging.info("%s: fault at %d accepted: %s", name, accepted, fault.name)
                inject(fault)
                logging.info("%s: %s", name, fault)
                result.faults.append(fault)
            if time.monotonic() - last_log > 15:
                record.poll()
                logging.info(
                    "%s: %d accepted, %d handled, answers %s",
                    name,
                    accepted,
                    len(record.times),
                    dict(poster.tally.answers),
                )
                last_log = time.monotonic()
            time.sleep(0.2)
        poster.stop()
        if not sampled_10:
            result.memory["10%"] = scenario.memory()
        tally = poster.tally
        posted_at = time.time()
        result.post_seconds = (tally.last_accept or posted_at) - tally.first_post
        accepted_ids = set(tally.accepted)
        statuses, stopped_early = wait_final(scenario, accepted_ids, args, record)
        drained_at = time.time()
        if stopped_early:
            result.problems.append(stopped_early)
            result.stack_dumps = dump_stacks(scenario, folder)
        time.sleep(2)  # let the handlers' last appends land
        record.poll()
        result.memory["end"] = scenario.memory()
        final_of = Counter(str(statuses.get(i, "missing")) for i in accepted_ids)
        result.accepted = len(accepted_ids)
        result.final = sum(
            n for s, n in final_of.items() if s.isdigit() and int(s) in FINAL_STATUSES
        )
        result.not_final = result.accepted - result.final
        result.final_statuses = {
            s: n for s, n in final_of.items() if s.isdigit() and int(s) in FINAL_STATUSES
        }
        result.not_final_statuses = {
            s: n for s, n in final_of.items() if s not in result.final_statuses
        }
        handled = {i: t for i, t in record.times.items() if i.startswith(f"soak-{name}-")}
        result.handled = len(handled)
        twice = {i: sorted(t) for i, t in handled.items() if len(t) > 1}
        result.handled_twice = len(twice)
        result.extra_handlings = sum(len(t) - 1 for t in twice.values())
        result.handled_not_accepted = len(set(handled) - accepted_ids)
        result.duplicates_by_fault = dict(
            Counter(attribute(t[0], result.faults) for t in twice.values())
        )
        result.duplicate_examples = [
            {"id": i, "handled_at": t, "nearest_fault": attribute(t[0], result.faults)}
            for i, t in list(twice.items())[:10]
        ]
        result.answers = dict(tally.answers.most_common())
        result.resent, result.resent_already_stored = tally.resent, tally.resent_already_stored
        result.gave_up = len(tally.gave_up)
        result.drain_seconds = drained_at - posted_at
        result.wall_seconds = time.time() - began
        result.accept_rate = result.accepted / result.post_seconds if result.post_seconds else 0.0
        e2e = drained_at - tally.first_post
        result.end_to_end_rate = result.final / e2e if e2e else 0.0
        result.problems += scenario.problems()
        if result.not_final:
            result.problems.append(
                f"{result.not_final} accepted events not final: {result.not_final_statuses}"
            )
    except Exception as exc:
        logging.exception("%s failed", name)
        result.error = f"{type(exc).__name__}: {exc}"
        result.wall_seconds = time.time() - began
    finally:
        procs.stop_all()
        scenario.stop()
    return result


def wait_final(
    scenario: Scenario, accepted: set[str], args: argparse.Namespace, record: RecordFile
) -> tuple[dict[str, int], str | None]:
    """Poll the database until every accepted event is final; (statuses, why it stopped early).

    Gives up after ``--drain-timeout``, or sooner when nothing became final for
    ``--stall-timeout`` seconds (longer than every recovery delay: WORKER_DEAD_AFTER
    and REQUEUE_AFTER are 30 s).
    """
    deadline = time.monotonic() + args.drain_timeout
    last_waiting, last_progress = -1, time.monotonic()
    while True:
        statuses = scenario.statuses()
        waiting = sum(statuses.get(i) not in FINAL_STATUSES for i in accepted)
        record.poll()
        logging.info(
            "%s: draining, %d of %d accepted not final yet, %d handled",
            scenario.name,
            waiting,
            len(accepted),
            len(record.times),
        )
        if not waiting:
            return statuses, None
        if waiting != last_waiting:
            last_waiting, last_progress = waiting, time.monotonic()
        if time.monotonic() - last_progress > args.stall_timeout:
            return statuses, f"stalled: nothing became final for {args.stall_timeout:.0f} s"
        if time.monotonic() > deadline:
            return statuses, f"drain timeout ({args.drain_timeout:.0f} s)"
        time.sleep(5)


def dump_stacks(scenario: Scenario, folder: Path) -> list[str]:
    """py-spy dumps of every worker process (main and pool), when py-spy is installed."""
    py_spy = Path(PYTHON).parent / "py-spy"
    if not py_spy.exists():
        return []
    written = []
    for main in scenario.workers().values():
        for pid in [main, *children_of(main)]:
            out = folder / f"stall-py-spy-{pid}.txt"
            dump = subprocess.run(
                [str(py_spy), "dump", "--pid", str(pid)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            out.write_text(dump.stdout + dump.stderr)
            written.append(str(out))
    return written


# --- report --------------------------------------------------------------------------------------


def _mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:.0f}"


def markdown(results: list[SoakResult]) -> str:
    """The results table, the faults and the memory table, as Markdown."""
    head = "| | " + " | ".join(r.scenario for r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]

    def row(label: str, cell: Callable[[SoakResult], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")

    row("events posted", lambda r: f"{r.events:,}")
    row("accepted (2xx)", lambda r: f"{r.accepted:,}")
    row("final (200/422/500)", lambda r: f"{r.final:,} {r.final_statuses or ''}")
    row("not final", lambda r: f"{r.not_final:,} {r.not_final_statuses or ''}")
    row("handled (record file)", lambda r: f"{r.handled:,}")
    row("handled more than once", lambda r: f"{r.handled_twice:,} (+{r.extra_handlings:,} runs)")
    row("handled, not accepted", lambda r: f"{r.handled_not_accepted:,}")
    row("answers", lambda r: ", ".join(f"{k}: {v:,}" for k, v in r.answers.items()))
    row("re-sent / of them already stored", lambda r: f"{r.resent:,} / {r.resent_already_stored:,}")
    row("clients gave up", lambda r: f"{r.gave_up:,}")
    row(
        "posting s / drain after s / wall s",
        lambda r: f"{r.post_seconds:,.0f} / {r.drain_seconds:,.0f} / {r.wall_seconds:,.0f}",
    )
    row("accepted/s while posting", lambda r: f"{r.accept_rate:,.0f}")
    row("final/s end to end", lambda r: f"{r.end_to_end_rate:,.0f}")
    row(
        "result",
        lambda r: (
            "OK" if r.ok else "FAILED: " + "; ".join([*(r.problems), r.error or ""]).strip("; ")
        ),
    )
    lines += [
        "",
        "| scenario | fault | at accepted | action s | back after s | duplicates attributed | detail |",
    ]
    lines.append("|---|---|---:|---:|---:|---:|---|")
    for r in results:
        for f in r.faults:
            back = "n/a" if f.recovered_after is None else f"{f.recovered_after:.1f}"
            lines.append(
                f"| {r.scenario} | {f.name} | {f.at_accepted:,} | {f.seconds:.1f} | {back} "
                f"| {r.duplicates_by_fault.get(f.name, 0):,} | {f.detail} |"
            )
        other = {
            k: v for k, v in r.duplicates_by_fault.items() if k not in {f.name for f in r.faults}
        }
        for label, count in other.items():
            lines.append(f"| {r.scenario} | {label} | | | | {count:,} | |")
    lines += ["", "| scenario | process | start RSS / HWM MB | after 10 % | end | pids |"]
    lines.append("|---|---|---|---|---|---|")
    for r in results:
        names = {n for sample in r.memory.values() for n in sample}
        for name in sorted(names, key=lambda n: (n != "receiver", n)):
            cells, pids = [], []
            for moment in ("start", "10%", "end"):
                m = r.memory.get(moment, {}).get(name, {})
                cells.append(f"{_mb(m.get('VmRSS'))} / {_mb(m.get('VmHWM'))}")
                pids.append(str(m.get("pid", "-")))
            lines.append(
                f"| {r.scenario} | {name} | " + " | ".join(cells) + f" | {' → '.join(pids)} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_soak",
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100_000, help="events per scenario [100000]")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "both"), default="both", help="[both]")
    parser.add_argument("--threads", type=int, default=8, help="client threads posting [8]")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="pool processes of each postgres-scenario worker [1]",
    )
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=300.0,
        help="seconds a client keeps re-sending one event [300]",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for every accepted event to be final [1800]",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=300.0,
        help="stop draining when nothing became final for this long (py-spy dumps the workers) [300]",
    )
    parser.add_argument(
        "--skip-fault",
        action="append",
        default=[],
        metavar="TEXT",
        help="leave out the faults whose name contains TEXT (e.g. 'pool child'); repeatable",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--workdir", type=Path, help="where databases and logs go [a new temp folder]"
    )
    args = parser.parse_args(argv)
    args.embedded_concurrency = 2  # WORKER_CONCURRENCY's default, which serve's worker uses
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print the tables."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True
    )
    names = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
    if "postgres" in names and not shutil.which("redis-server"):
        print("redis-server is not installed (apt-get install -y redis-server)", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind like Ctrl-C: every process is stopped
        signal.signal(sig, signal.default_int_handler)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dispatcher-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for name in names:
            results.append(run_scenario(name, args, workdir / name))
    except KeyboardInterrupt:
        print(
            f"interrupted; every started process was stopped (logs in {workdir})", file=sys.stderr
        )
        return 130
    table = markdown(results)
    print(
        f"\n### Soak under faults: {args.events:,} events per scenario, {args.threads} client "
        f"threads; {os.cpu_count()} CPUs, Python {platform.python_version()}\n"
    )
    print(table)
    print(f"\nlogs and databases: {workdir}")
    if args.json:
        payload = {
            "events": args.events,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "results": [{**asdict(r), "ok": r.ok} for r in results],
            "table": table,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
