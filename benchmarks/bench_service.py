"""Side-by-side benchmark: this dispatcher against upstream pacifica-dispatcher 0.2.5.

Both run on Redis + SQLite with two prefork worker processes, on one machine,
in one run. Every system gets a fresh private ``redis-server`` and a fresh
database, and is stopped (by process group) before the next one starts.

For each system the script measures

1. accepted events per second at ``POST /receive`` for each ``--concurrency``
   (wrk with a Lua script making a unique ``eventID`` per request, or a Python
   load generator with keep-alive connections when wrk is missing), while the
   workers consume the queue as in production; and
2. end to end: ``--events`` events are posted, then the handler's record file
   (both sides run a handler appending ``"<eventID> <time.time()>"``) is polled
   until every id is present; it reports the drain rate, the per-event latency
   from POST to handled (p50, p99), and how many were handled, lost or
   handled twice.

Run from the repository root with the project venv::

    .venv/bin/python -m benchmarks.bench_service                 # full run
    .venv/bin/python -m benchmarks.bench_service --quick         # smoke run
    .venv/bin/python -m benchmarks.bench_service --systems ours --profile

The upstream peer is installed, if missing, into its own venv at
``${UPSTREAM_VENV:-/tmp/upstream-dispatcher-venv}``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import cProfile
import http.client
import io
import json
import logging
import os
import platform
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wsgiref.util
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / "peers"
WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"
UPSTREAM_VENV = Path(os.environ.get("UPSTREAM_VENV", "/tmp/upstream-dispatcher-venv"))
UPSTREAM_REQUIREMENTS = ["pacifica-dispatcher==0.2.5", "celery[redis]"]
SYSTEMS = ("ours", "upstream", "ours-uwsgi", "upstream-uwsgi")
# The production shape (README, Dockerfile.uwsgi) on this machine's two cores, the same for both.
UWSGI_OPTIONS = ["--master", "--lazy-apps", "--processes", "1", "--threads", "16"]
UWSGI_OPTIONS += ["--disable-logging", "--die-on-term", "--need-app"]
WORKERS = 2
EVENT_TYPE = "org.pacifica.metadata.ingest"
WARMUP_EVENTS = 20
HTTP_ERRORS = (OSError, http.client.HTTPException)


def event_body(event_id: str) -> bytes:
    """A CloudEvents 0.1 document (what Pacifica Metadata emits); both sides accept it."""
    return json.dumps(
        {
            "cloudEventsVersion": "0.1",
            "eventType": EVENT_TYPE,
            "eventID": event_id,
            "source": "/pacifica/metadata/ingest",
            "contentType": "application/json",
            "data": [{"destinationTable": "Transactions._id", "value": 1}],
        },
        separators=(",", ":"),
    ).encode()


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Managed:
    """A started process (leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        """The end of the process's log, for error messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Starts processes in their own process groups and stops them all, newest first."""

    def __init__(self) -> None:
        self.running: list[Managed] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str], cwd: Path, log: Path
    ) -> Managed:
        """Start ``command`` in a new session, output to ``log``."""
        with log.open("ab") as out:
            popen = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        managed = Managed(name, popen, log)
        self.running.append(managed)
        logging.info("started %s (pid %d): %s", name, popen.pid, " ".join(command))
        return managed

    def stop(self, managed: Managed, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal the process group, wait (bounded), then SIGKILL whatever is left of it."""
        pgid = managed.popen.pid  # start_new_session: the leader's pid is the group id
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            managed.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            logging.warning("%s did not stop in %.0f s; killing it", managed.name, timeout)
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.popen.wait(5)
        if managed in self.running:
            self.running.remove(managed)
        logging.info("stopped %s (pid %d)", managed.name, pgid)

    def stop_all(self) -> None:
        """Stop every process still running, newest first."""
        for managed in reversed(list(self.running)):
            try:
                self.stop(managed)
            except Exception:  # keep stopping the others
                logging.exception("could not stop %s", managed.name)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    ready: Callable[[], bool], timeout: float, what: str, proc: Managed | None = None
) -> None:
    """Poll ``ready`` until it is true; fail after ``timeout`` or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        time.sleep(0.1)
    tail = f"\n{proc.tail()}" if proc is not None else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{tail}")


def redis_command(port: int, *words: str) -> bytes:
    """Send one command to Redis (RESP) and return the raw first reply."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        raw = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"".join(parts))
        return sock.recv(4096)


def redis_ready(port: int) -> bool:
    """True when Redis answers PING."""
    try:
        return redis_command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


def http_ready(port: int) -> bool:
    """True when something answers HTTP ``GET /`` on the port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/?limit=1")
        conn.getresponse().read()
    except HTTP_ERRORS:
        return False
    finally:
        conn.close()
    return True


# --- installs ----------------------------------------------------------------------------------


def run_checked(command: list[str], what: str, timeout: float = 900) -> None:
    """Run a short command to completion; raise with its output on failure."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def ensure_upstream_venv(
    venv: Path = UPSTREAM_VENV,
    requirements: tuple[str, ...] = tuple(UPSTREAM_REQUIREMENTS),
    imports: str = "pacifica.dispatcher.receiver, cloudevents.model, redis",
) -> Path:
    """The upstream venv's python; create the venv and install ``requirements`` if ``imports``
    fail there (default: upstream pacifica-dispatcher 0.2.5; the tests install notifications too)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import {imports}"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    logging.info("installing %s into %s", " ".join(requirements), venv)
    if not python.exists():
        run_checked([sys.executable, "-m", "venv", str(venv)], "venv")
    run_checked([str(python), "-m", "pip", "install", "-q", *requirements], "pip install")
    run_checked(probe, "upstream import check")
    return python


def ensure_tool(name: str, package: str, python: str = sys.executable) -> Path:
    """A console script of ``python``'s venv (the project's), ``pip install``-ed if missing."""
    tool = Path(python).parent / name
    if not tool.exists():
        logging.info("installing %s into %s", package, Path(python).parent.parent)
        run_checked([python, "-m", "pip", "install", "-q", package], f"pip install {package}")
    return tool


def celery_worker_command(python: str, app: str) -> list[str]:
    """A prefork Celery worker of ``app`` with the benchmark's process count, quiet."""
    return [
        *(python, "-m", "celery", "-A", app, "worker", "-P", "prefork", "-c", str(WORKERS)),
        *("--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]


def uwsgi_command(python: str, port: int, module: str) -> list[str]:
    """uWSGI serving ``module`` (``pkg.mod:application``) with HTTP/1.1 keep-alive on ``port``."""
    uwsgi = str(ensure_tool("uwsgi", "uwsgi", python))
    return [uwsgi, "--http11-socket", f"127.0.0.1:{port}", *UWSGI_OPTIONS, "--module", module]


# --- load generation -----------------------------------------------------------------------------


@dataclass
class PostResult:
    """What a batch of POSTs gave: accepted ids (2xx) with their send times, and failures."""

    sent_at: dict[str, float] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def _post_one(conn: http.client.HTTPConnection, event_id: str) -> int:
    conn.request(
        "POST", "/receive", body=event_body(event_id), headers={"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    response.read()
    return response.status


def post_events(port: int, ids: list[str], concurrency: int) -> PostResult:
    """POST each id once, from ``concurrency`` threads with keep-alive connections."""
    result = PostResult()
    lock = threading.Lock()
    pending = iter(ids)

    def next_id() -> str | None:
        with lock:
            return next(pending, None)

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while (event_id := next_id()) is not None:
                outcome = ""
                for _attempt in range(3):  # a server closing the connection costs a reconnect
                    sent = time.time()
                    try:
                        status = _post_one(conn, event_id)
                    except HTTP_ERRORS as exc:
                        conn.close()
                        outcome = type(exc).__name__
                        continue
                    outcome = "" if 200 <= status < 300 else f"HTTP {status}"
                    break
                with lock:
                    if outcome:
                        result.failed[outcome] += 1
                    else:
                        result.sent_at[event_id] = sent
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=run, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    result.seconds = time.perf_counter() - started
    return result


def _python_load(port: int, threads: int, duration: float, prefix: str) -> Counter[str]:
    """POST from ``threads`` keep-alive connections for ``duration`` s: {"ok": n, error kind: n}."""
    counts = Counter[str]()
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def run(number: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = Counter[str]()
        sequence = 0
        try:
            while time.monotonic() < deadline:
                sequence += 1
                try:
                    status = _post_one(conn, f"{prefix}-{number}-{sequence}")
                except HTTP_ERRORS as exc:
                    conn.close()
                    mine[type(exc).__name__] += 1
                    continue
                mine["ok" if 200 <= status < 300 else f"HTTP {status}"] += 1
        finally:
            conn.close()
            with lock:
                counts.update(mine)

    pool = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(duration + 120)
    return counts


@dataclass
class AcceptResult:
    """One ``POST /receive`` throughput measurement."""

    concurrency: int
    tool: str
    seconds: float
    accepted: int
    failed: int
    rate: float
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    errors: dict[str, int] = field(default_factory=dict)


def accept_rate(
    port: int, concurrency: int, duration: float, prefix: str, tool: str
) -> AcceptResult:
    """Accepted POSTs per second at ``concurrency`` for ``duration`` seconds."""
    if tool == "wrk":
        return _wrk_accept_rate(port, concurrency, duration, prefix)
    processes = 2 if concurrency >= 2 else 1  # two client processes: one GIL would cap the load
    shares = [concurrency // processes + (n < concurrency % processes) for n in range(processes)]
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        futures = [
            pool.submit(_python_load, port, share, duration, f"{prefix}-p{n}")
            for n, share in enumerate(shares)
        ]
        totals = Counter[str]()
        for future in futures:
            totals.update(future.result(timeout=duration + 180))
    seconds = min(time.perf_counter() - started, duration)
    accepted = totals.pop("ok", 0)
    failed = sum(totals.values())
    return AcceptResult(
        concurrency, "python", seconds, accepted, failed, accepted / seconds, errors=dict(totals)
    )


def _wrk_accept_rate(port: int, concurrency: int, duration: float, prefix: str) -> AcceptResult:
    command = [
        "wrk",
        f"-t{min(2, concurrency)}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{port}",
        "--",
        prefix,
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 120, check=False
    )
    match = re.search(r"^WRK_RESULT (\{.*\})$", output.stdout, re.MULTILINE)
    if output.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({output.returncode}):\n{output.stdout}{output.stderr}")
    data = json.loads(match.group(1))
    seconds = data["duration_us"] / 1e6
    accepted = data["requests"] - data["status_errors"]
    errors = {
        k: int(data[k])
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
        if data[k]
    }
    return AcceptResult(
        concurrency,
        "wrk",
        seconds,
        accepted,
        data["status_errors"],
        accepted / seconds,
        data["p50_ms"],
        data["p99_ms"],
        errors,
    )


# --- the handled-events record -------------------------------------------------------------------


class RecordFile:
    """Reads the handlers' ``"<id> <time>"`` lines incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.times: dict[str, list[float]] = {}

    def poll(self) -> None:
        """Read lines appended since the last poll."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in lines:
            event_id, _, stamp = line.decode().partition(" ")
            with contextlib.suppress(ValueError):
                self.times.setdefault(event_id, []).append(float(stamp))

    def wait_for(self, ids: set[str], timeout: float) -> bool:
        """Poll until every id was handled (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if ids.issubset(self.times):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)


@dataclass
class EndToEnd:
    """The end-to-end measurement of one system."""

    events: int
    post_concurrency: int
    accepted: int
    post_failures: dict[str, int]
    post_seconds: float
    post_rate: float
    handled: int
    lost: int
    duplicates: int
    drain_seconds: float | None
    rate: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    timed_out: bool


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def end_to_end(
    port: int, record: RecordFile, events: int, concurrency: int, deadline: float, run_id: str
) -> EndToEnd:
    """Post ``events`` unique events, wait until all were handled, and measure."""
    ids = [f"e2e-{run_id}-{n}" for n in range(events)]
    posted = post_events(port, ids, concurrency)
    accepted = set(posted.sent_at)
    complete = record.wait_for(accepted, deadline)
    record.poll()
    handled = {i: record.times[i] for i in ids if i in record.times}
    latencies = [(min(t) - posted.sent_at[i]) * 1000 for i, t in handled.items() if i in accepted]
    duplicates = sum(len(t) - 1 for t in handled.values())
    last = max((min(t) for t in handled.values()), default=None)
    first = min(posted.sent_at.values(), default=None)
    drain = None if last is None or first is None else last - first
    return EndToEnd(
        events=events,
        post_concurrency=concurrency,
        accepted=len(accepted),
        post_failures=dict(posted.failed),
        post_seconds=posted.seconds,
        post_rate=len(accepted) / posted.seconds if posted.seconds else 0.0,
        handled=len(handled),
        lost=events - len(handled),
        duplicates=duplicates,
        drain_seconds=drain,
        rate=len(handled) / drain if drain else None,
        latency_p50_ms=percentile(latencies, 0.50) if latencies else None,
        latency_p99_ms=percentile(latencies, 0.99) if latencies else None,
        latency_max_ms=max(latencies) if latencies else None,
        timed_out=not complete,
    )


# --- the systems under test ----------------------------------------------------------------------


@dataclass
class Running:
    """A started system: its receiver port, redis port, record file and processes."""

    port: int
    redis_port: int
    record: RecordFile
    receiver: Managed
    worker: Managed


def base_env(**extra: str) -> dict[str, str]:
    """This environment without settings that would leak into the systems, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "PEEWEE_URL", "BROKER_URL", "BACKEND_URL", "DISPATCHER_CONFIG")
    }
    env.update(extra)
    return env


def start_redis(procs: Processes, folder: Path, port: int | None = None) -> int:
    """A private, non-persistent redis-server on ``port`` (default: a free loopback port)."""
    port = port or free_port()
    redis = procs.start(
        "redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        base_env(),
        folder,
        folder / "redis.log",
    )
    wait_until(lambda: redis_ready(port), 15, "redis", redis)
    return port


def start_ours(
    procs: Processes,
    folder: Path,
    uwsgi: bool,
    server: Callable[[str, int], list[str]] | None = None,
) -> Running:
    """This project: receiver (CherryPy's server or uWSGI, or ``server(python, port)``'s
    command) and a 2-process Celery worker."""
    redis_port = start_redis(procs, folder)
    record = folder / "handled.txt"
    env = base_env(
        DATABASE_URL=f"sqlite:///{folder / 'ours.sqlite3'}",
        BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
        BENCH_RECORD_FILE=str(record),
        DISPATCHER_DATA_DIR=str(folder / "data"),
        WORKER_CONCURRENCY=str(WORKERS),
        # The sweeper would re-send the queue the accept phases drop; once at start is enough.
        REQUEUE_INTERVAL="3600",
        PYTHONPATH=str(ROOT),
    )
    python = sys.executable
    run_checked_env([python, "-m", "benchmarks.bench_app", "db", "sync"], env, "db sync")
    port = free_port()
    if server is not None:
        command = server(python, port)
    elif uwsgi:
        command = uwsgi_command(python, port, "benchmarks.bench_app_wsgi:application")
    else:
        command = [python, "-m", "benchmarks.bench_app", "serve", "--port", str(port)]
        command.append("--no-worker")
    receiver = procs.start("receiver", command, env, ROOT, folder / "receiver.log")
    wait_until(lambda: http_ready(port), 60, "receiver", receiver)
    command = celery_worker_command(python, "benchmarks.bench_app:celery_app")
    worker = procs.start("worker", command, env, ROOT, folder / "worker.log")
    return Running(port, redis_port, RecordFile(record), receiver, worker)


def start_upstream(procs: Processes, folder: Path, uwsgi: bool) -> Running:
    """Upstream 0.2.5: the shim on CherryPy's server or uWSGI, and a 2-process prefork worker."""
    python = ensure_upstream_venv()
    redis_port = start_redis(procs, folder)
    record = folder / "handled.txt"
    env = base_env(
        DATABASE_URL=f"sqlite:///{folder / 'upstream.sqlite3'}",
        BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
        BACKEND_URL="rpc://",
        BENCH_RECORD_FILE=str(record),
    )
    env.pop("PYTHONPATH", None)
    port = free_port()
    command = [str(python), "upstream_dispatcher.py", str(port)]
    if uwsgi:
        command = uwsgi_command(str(python), port, "upstream_dispatcher:application")
    receiver = procs.start("receiver", command, env, PEERS_DIR, folder / "receiver.log")
    wait_until(lambda: http_ready(port), 60, "upstream receiver", receiver)
    command = celery_worker_command(str(python), "upstream_dispatcher:celery_app")
    worker = procs.start("worker", command, env, PEERS_DIR, folder / "worker.log")
    return Running(port, redis_port, RecordFile(record), receiver, worker)


def start_system(procs: Processes, folder: Path, system: str) -> Running:
    """Start ``ours``, ``upstream``, ``ours-uwsgi`` or ``upstream-uwsgi`` and warm it up."""
    start = start_upstream if system.startswith("upstream") else start_ours
    running = start(procs, folder, uwsgi=system.endswith("-uwsgi"))
    warm_up(running)
    return running


def warm_up(running: Running, prefix: str = "warm") -> None:
    """Put ``WARMUP_EVENTS`` events through the whole path before measuring (not counted).

    Raises:
        RuntimeError: they were not all handled within 90 s (with the logs' tails).
    """
    warm = post_events(running.port, [f"{prefix}-{n}" for n in range(WARMUP_EVENTS)], 2)
    if not warm.sent_at or not running.record.wait_for(set(warm.sent_at), 90):
        raise RuntimeError(
            f"warm-up events were not handled (posted {len(warm.sent_at)}, "
            f"failures {dict(warm.failed)}):\n{running.worker.tail()}\n{running.receiver.tail()}"
        )


def run_checked_env(command: list[str], env: dict[str, str], what: str) -> None:
    """Run a short command from the repository root with ``env``."""
    result = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def drop_queue(redis_port: int) -> None:
    """Drop the messages still queued (the default ``celery`` list), keeping kombu's bindings."""
    with contextlib.suppress(OSError):
        redis_command(redis_port, "DEL", "celery")


# --- profiling -----------------------------------------------------------------------------------

# (label, regular expression searched in each py-spy frame, e.g. "Receiver.__call__ (dispatcher/service/web/receiver.py:60)").
# The package's own functions are listed automatically (see ``summarize_profile``).
RECEIVER_MARKERS = [
    (
        "Receiver.__call__ (whole /receive handler)",
        r"^Receiver\.__call__ \(dispatcher/service/web/receiver\.py",
    ),
    ("Celery send_task (publish to Redis)", r"^Celery\.send_task \(celery/"),
    ("peewee Database.execute_sql (all SQL)", r"^Database\.execute_sql \(peewee"),
    ("peewee Model.create / save", r"^Model\.(create|save) \(peewee"),
    ("uuid4 (mostly GIL re-acquire after getrandom)", r"^uuid4 \(uuid\.py"),
    ("CherryPy access/error logging", r"^LogManager\.(access|error) \(cherrypy"),
    ("logging handler lock", r"^Handler\.acquire \(logging"),
    ("idle: Condition.wait", r"^Condition\.wait \(threading"),
]
WORKER_MARKERS = [
    ("process_task (the Celery task)", r"^process_task \(dispatcher/service/worker\.py"),
    ("recording handler (file append)", r"^RecordingEventHandler\.handle "),
    ("peewee Database.execute_sql (all SQL)", r"^Database\.execute_sql \(peewee"),
    ("peewee Database.commit", r"^Database\.commit \(peewee"),
    ("kombu (broker I/O, main process)", r"\(kombu/"),
    ("billiard pool IPC", r"\(billiard/"),
    ("logging", r"\(logging/__init__\.py"),
]
OWN_FRAME = re.compile(r"\((dispatcher|benchmarks)/[^)]*\)$|bench_app\.py")


@dataclass
class Profiler:
    """A py-spy recording of one process tree."""

    name: str
    managed: Managed
    output: Path


def start_profiler(procs: Processes, target: Managed, name: str, folder: Path) -> Profiler:
    """Record ``target`` and its children with py-spy (raw collapsed stacks)."""
    py_spy = ensure_tool("py-spy", "py-spy")
    output = folder / f"profile-{name}.txt"
    managed = procs.start(
        f"py-spy {name}",
        [
            str(py_spy),
            "record",
            "--pid",
            str(target.popen.pid),
            "--subprocesses",
            "--nonblocking",
            "--function",
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        base_env(),
        folder,
        folder / f"py-spy-{name}.log",
    )
    return Profiler(name, managed, output)


def summarize_profile(path: Path, markers: list[tuple[str, str]], top: int = 15) -> dict[str, Any]:
    """Inclusive shares of marked frames and the hottest leaf functions in a raw py-spy file."""
    total = 0
    marked = Counter[str]()
    leaves = Counter[str]()
    own = Counter[str]()
    compiled = [(label, re.compile(pattern)) for label, pattern in markers]
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for label, pattern in compiled:
            if any(pattern.search(frame) for frame in frames):
                marked[label] += count
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames if OWN_FRAME.search(f)}:
            own[frame] += count
        leaves[re.sub(r":\d+\)$", ")", frames[-1])] += count
    share = {label: round(100 * marked[label] / total, 1) if total else 0.0 for label, _ in markers}
    hottest = [(leaf, round(100 * n / total, 1)) for leaf, n in leaves.most_common(top)]
    package = [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)]
    return {
        "samples": total,
        "inclusive_percent": share,
        "package_inclusive_percent": package,
        "top_self_percent": hottest,
    }


def _wsgi_post(app: Any, body: bytes) -> tuple[str, bytes]:
    """POST ``body`` to ``/receive`` of a WSGI app in-process; (status line, body)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/receive",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    wsgiref.util.setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        del headers, exc_info
        status.append(line)
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        payload = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return status[0], payload


def _top_functions(profile: cProfile.Profile, events: int, top: int = 10) -> dict[str, list[str]]:
    """Our functions by cumulative time, and every function by own time, per event."""
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in stats.items():
        short = re.sub(r"^.*/(site-packages|lib/python[\d.]+|pacifica)/", "", path)
        rows.append((cumulative, own, calls, f"{name} ({short}:{line})", "/pacifica/" in path))

    def per_event(ms: float, calls: int, label: str) -> str:
        return f"{1000 * ms / events:6.3f} ms {calls / events:6.1f}x {label}"

    ours = sorted((r for r in rows if r[4]), reverse=True)[:top]
    own_time = sorted(rows, key=lambda r: r[1], reverse=True)[:top]
    return {
        "ours_cumulative": [per_event(r[0], r[2], r[3]) for r in ours],
        "all_self": [per_event(r[1], r[2], r[3]) for r in own_time],
    }


def _census_post(app: Any, event_id: str) -> str:
    status, payload = _wsgi_post(app, event_body(event_id))
    if not status.startswith("2"):
        raise RuntimeError(f"census POST answered {status}: {payload[:200]!r}")
    return str(json.loads(payload))


def sql_census(events: int = 200) -> dict[str, Any]:
    """SQL statements and time per event for our receiver and worker code, in-process.

    Drives the real receiver WSGI app (``POST /receive`` through the group-commit
    intake, with a publisher that only returns the ids, one request at a time) and then
    the worker task's body (``dispatch.process_many`` on messages of
    ``EVENTS_PER_MESSAGE`` events) on a scratch SQLite file in WAL mode, as in the
    benchmark, logging every statement peewee executes and profiling both
    loops with cProfile. No broker and no HTTP server are involved.
    """
    import cherrypy

    from benchmarks.bench_app import create_router
    from pacifica.dispatcher.config import Settings
    from pacifica.dispatcher.service import dispatch
    from pacifica.dispatcher.service.intake import Intake
    from pacifica.dispatcher.service.outbox import event_outbox
    from pacifica.dispatcher.service.web import create_app
    from pacifica.dispatcher.storage import open_database, sync_schema

    statements: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.msg
            sql = message[0] if isinstance(message, tuple) else str(message)
            statements.append(" ".join(str(sql).split()[:4]))

    peewee_log = logging.getLogger("peewee")
    collect = Collect(level=logging.DEBUG)
    with tempfile.TemporaryDirectory(prefix="sql-census-") as scratch:
        url = f"sqlite:///{scratch}/census.sqlite3"
        settings = Settings.from_env({"DATABASE_URL": url, "DISPATCHER_DATA_DIR": scratch})
        database = open_database(url)
        sync_schema(database)
        os.environ["BENCH_RECORD_FILE"] = f"{scratch}/handled.txt"
        router = create_router(settings)
        cherrypy.config.update({"log.screen": False, "environment": "embedded"})
        outbox = event_outbox(lambda ids, delay: list(ids), settings.processing_lease)
        app = create_app(settings, Intake(outbox.send).submit)
        old_level = peewee_log.level
        peewee_log.addHandler(collect)
        peewee_log.setLevel(logging.DEBUG)
        receiver_profile, worker_profile = cProfile.Profile(), cProfile.Profile()
        try:
            started = time.perf_counter()
            ids = [_census_post(app, f"census-{n}") for n in range(events)]
            accept_seconds = time.perf_counter() - started
            accept_statements = Counter(statements)
            receiver_profile.enable()
            ids += [_census_post(app, f"census-profiled-{n}") for n in range(events)]
            receiver_profile.disable()
            statements.clear()
            size = settings.events_per_message
            started = time.perf_counter()
            for start in range(0, events, size):
                dispatch.process_many(ids[start : min(start + size, events)], router)
            process_seconds = time.perf_counter() - started
            process_statements = Counter(statements)
            worker_profile.enable()
            for start in range(events, 2 * events, size):
                dispatch.process_many(ids[start : start + size], router)
            worker_profile.disable()
        finally:
            peewee_log.removeHandler(collect)
            peewee_log.setLevel(old_level)
            database.close()
    return {
        "events": events,
        "receiver_ms_per_event": round(1000 * accept_seconds / events, 3),
        "receiver_statements_per_event": {
            k: round(v / events, 2) for k, v in accept_statements.most_common()
        },
        "receiver_cprofile": _top_functions(receiver_profile, events),
        "worker_ms_per_event": round(1000 * process_seconds / events, 3),
        "worker_statements_per_event": {
            k: round(v / events, 2) for k, v in process_statements.most_common()
        },
        "worker_cprofile": _top_functions(worker_profile, events),
    }


# --- one system, all phases ----------------------------------------------------------------------


@dataclass
class SystemResult:
    """Everything measured for one system."""

    system: str
    accept: list[AcceptResult] = field(default_factory=list)
    end_to_end: EndToEnd | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""
    error: str | None = None


def measure_system(system: str, args: argparse.Namespace, folder: Path) -> SystemResult:
    """Start one system fresh, warm it up, run every phase, and stop it (always)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = SystemResult(system, workdir=str(folder))
    procs = Processes()
    profilers: list[Profiler] = []
    try:
        running = start_system(procs, folder, system)
        logging.info("%s: warmed up; end to end with %d events", system, args.events)
        if args.profile and system.startswith("ours"):
            profilers = [
                start_profiler(procs, running.receiver, f"{system}-receiver", folder),
                start_profiler(procs, running.worker, f"{system}-worker", folder),
            ]
            time.sleep(1)  # let py-spy attach before the load starts
        result.end_to_end = end_to_end(
            running.port,
            running.record,
            args.events,
            args.e2e_concurrency,
            args.deadline,
            str(int(time.time())),
        )
        logging.info("%s: end to end %s", system, result.end_to_end)
        for concurrency in args.concurrency:
            measured = accept_rate(
                running.port, concurrency, args.duration, f"acc{concurrency}", args.loadgen
            )
            logging.info("%s: accept %s", system, measured)
            result.accept.append(measured)
            drop_queue(running.redis_port)  # the next phase starts without this backlog
            time.sleep(1)
        for profiler in profilers:
            procs.stop(profiler.managed, signal.SIGINT, timeout=60)
            markers = RECEIVER_MARKERS if "receiver" in profiler.name else WORKER_MARKERS
            result.profile[profiler.name] = {
                "file": str(profiler.output),
                **summarize_profile(profiler.output, markers),
            }
    except Exception as exc:
        logging.exception("%s failed", system)
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        procs.stop_all()
    return result


# --- constant-rate phases (issue 17) ------------------------------------------------------------


@dataclass
class RatePhase:
    """One open-loop phase of one system: what was asked for and what it gave."""

    system: str
    asked: str  # "500" or "80%" (of upstream's own best closed-loop rate on the same server)
    result: Any  # rate_load.RateResult


def peer_of(system: str) -> str:
    """Upstream on the same server as ``system``."""
    return system.replace("ours", "upstream")


def resolve_rate(asked: str, system: str, results: list[SystemResult]) -> float | None:
    """Requests/s for ``asked``: a number, or a percentage of the peer's best accept rate."""
    if not asked.endswith("%"):
        return float(asked)
    peer = next((r for r in results if r.system == peer_of(system) and r.accept), None)
    if peer is None:
        return None
    return max(a.rate for a in peer.accept) * float(asked[:-1]) / 100


def measure_rates(
    system: str, rates: list[tuple[str, float]], args: argparse.Namespace, folder: Path
) -> list[RatePhase]:
    """Start ``system`` fresh (workers consuming), run each constant-rate phase, stop it."""
    from benchmarks.rate_load import open_loop  # it imports this module's event_body

    folder.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    phases = []
    try:
        running = start_system(procs, folder, system)
        for asked, rate in rates:
            measured = open_loop(running.port, rate, args.duration, f"rate{asked}-{time.time()}")
            logging.info("%s: %s/s open loop %s", system, asked, measured)
            phases.append(RatePhase(system, asked, measured))
            drop_queue(running.redis_port)
            time.sleep(1)
    finally:
        procs.stop_all()
    return phases


def rate_phases(
    args: argparse.Namespace, results: list[SystemResult], workdir: Path
) -> list[RatePhase]:
    """Every system's constant-rate phases, after the closed-loop ones gave upstream's best."""
    phases: list[RatePhase] = []
    for system in args.system_list:
        rates = [(a, resolve_rate(a, system, results)) for a in args.rates]
        wanted = [(a, r) for a, r in rates if r]
        try:
            phases += measure_rates(system, wanted, args, workdir / f"{system}-rate")
        except Exception:
            logging.exception("%s: constant-rate phases failed", system)
    return phases


def rate_table(phases: list[RatePhase]) -> str:
    """The constant-rate phases as one Markdown table, latency from the scheduled send time."""
    head = "| system | asked | offered/s | achieved/s | p50 ms | p99 ms | p99.9 ms | max ms "
    head += "| 2xx | 503 | other |"
    rows = [head, "|---|---|" + "---:|" * 9]
    for phase in phases:
        r = phase.result
        other = sum(v for k, v in r.statuses.items() if k not in ("2xx", "503"))
        cells = [phase.system, phase.asked, _fmt(r.offered), _fmt(r.achieved)]
        cells += [_fmt(v, 1) for v in (r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms)]
        cells += [str(r.count("2xx")), str(r.count("503")), str(other)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# --- report --------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown_table(results: list[SystemResult], concurrency: list[int]) -> str:
    """The side-by-side Markdown table."""
    head = ["system", *(f"accepted/s c={c}" for c in concurrency)]
    head += ["end-to-end events/s", "p50 latency ms", "p99 latency ms", "handled/lost/dup"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        if result.error and result.end_to_end is None:
            rows.append(f"| {result.system} | error: {result.error} |")
            continue
        by_c = {a.concurrency: a for a in result.accept}
        cells = [result.system]
        cells += [_fmt(by_c[c].rate) if c in by_c else "n/a" for c in concurrency]
        e2e = result.end_to_end
        if e2e is None:
            cells += ["n/a"] * 4
        else:
            cells += [
                _fmt(e2e.rate, 1),
                _fmt(e2e.latency_p50_ms),
                _fmt(e2e.latency_p99_ms),
                f"{e2e.handled}/{e2e.lost}/{e2e.duplicates}"
                + (" (timed out)" if e2e.timed_out else ""),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def details_table(results: list[SystemResult]) -> str:
    """Secondary figures: client-side POST rate and drain time, accept-phase latency and errors."""
    head = "| system | e2e POST rate/s | e2e drain s | e2e max latency ms | accept phases (c: p50/p99 ms, errors) |"
    rows = [head, "|---|---|---|---|---|"]
    for result in results:
        e2e = result.end_to_end
        phases = "; ".join(
            f"c={a.concurrency}: {_fmt(a.latency_p50_ms)}/{_fmt(a.latency_p99_ms)}"
            + (f" {a.errors}" if a.errors else "")
            + (f" failed={a.failed}" if a.failed else "")
            for a in result.accept
        )
        if e2e is None:
            rows.append(f"| {result.system} | n/a | n/a | n/a | {phases or 'n/a'} |")
            continue
        failures = f" (failed: {e2e.post_failures})" if e2e.post_failures else ""
        rows.append(
            f"| {result.system} | {_fmt(e2e.post_rate)}{failures} | {_fmt(e2e.drain_seconds, 1)} "
            f"| {_fmt(e2e.latency_max_ms)} | {phases or 'n/a'} |"
        )
    return "\n".join(rows)


def ratios(results: list[SystemResult]) -> list[str]:
    """Lines comparing our rows with upstream on the same server, and with upstream's best row."""
    by_name = {r.system: r for r in results if r.end_to_end is not None}
    peers = [r for r in by_name.values() if r.system.startswith("upstream")]
    lines = []
    for ours in (r for r in by_name.values() if r.system.startswith("ours")):
        same = by_name.get(ours.system.replace("ours", "upstream"))
        if same is not None:
            lines.append(f"- {ours.system} vs {same.system}: {_ratio_text(ours, same)}")
        best = max(peers, key=lambda r: max((a.rate for a in r.accept), default=0), default=None)
        if best is not None and best is not same:
            lines.append(
                f"- {ours.system} vs {best.system} (upstream's best): {_ratio_text(ours, best)}"
            )
    return lines


def _ratio_text(ours: SystemResult, theirs: SystemResult) -> str:
    parts = []
    for mine, peer in zip(ours.accept, theirs.accept, strict=False):
        if peer.rate:
            parts.append(f"accepted c={mine.concurrency} x{mine.rate / peer.rate:.1f}")
    if (
        ours.end_to_end is not None
        and theirs.end_to_end is not None
        and ours.end_to_end.rate is not None
        and theirs.end_to_end.rate
    ):
        parts.append(f"end-to-end x{ours.end_to_end.rate / theirs.end_to_end.rate:.1f}")
    return ", ".join(parts)


def print_profile(result: SystemResult) -> None:
    """Where the time goes in our receiver and worker (py-spy), as Markdown lists."""
    for name, summary in result.profile.items():
        if name == "sql_census":
            continue
        print(f"\n#### py-spy: {name} ({summary.get('samples', 0)} samples, {summary.get('file')})")
        for label, share in summary.get("inclusive_percent", {}).items():
            print(f"- {label}: {share}%")
        print("- our functions (inclusive %): ", end="")
        print(
            "; ".join(
                f"{name} {share}%" for name, share in summary.get("package_inclusive_percent", [])
            )
        )
        print("- hottest leaf functions (self %): ", end="")
        print("; ".join(f"{leaf} {share}%" for leaf, share in summary.get("top_self_percent", [])))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="end-to-end events [2000]")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[10, 50], help="accept phases [10 50]"
    )
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per accept phase")
    parser.add_argument(
        "--e2e-concurrency", type=int, default=10, help="client connections for end to end [10]"
    )
    parser.add_argument(
        "--deadline", type=float, default=600.0, help="seconds to wait for all events handled"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="accept-phase load generator; auto = wrk when installed",
    )
    parser.add_argument(
        "--rate",
        default="500,80%",
        help="constant-rate phases, requests/s or %% of upstream's best accept rate on the same "
        "server; '' skips them [500,80%%]",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 events, 3 s phases")
    parser.add_argument("--profile", action="store_true", help="py-spy our receiver and worker")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--workdir", type=Path, help="where databases, logs and profiles go")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = min(args.events, 200)
        args.duration = min(args.duration, 3.0)
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.rates = [r.strip() for r in args.rate.split(",") if r.strip()]
    unknown = set(args.system_list) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "python"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every requested system and print the table."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True
    )
    if not shutil.which("redis-server"):
        print("redis-server is not installed (apt-get install -y redis-server)", file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every started process is stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[SystemResult] = []
    try:
        for system in args.system_list:
            results.append(measure_system(system, args, workdir / system))
        phases = rate_phases(args, results, workdir)
    except KeyboardInterrupt:
        print(
            f"interrupted; every started process was stopped (logs in {workdir})", file=sys.stderr
        )
        return 130
    census: dict[str, Any] | None = None
    if args.profile:
        census = sql_census()
    table = markdown_table(results, args.concurrency)
    mode = "quick (smoke, noisy)" if args.quick else "full"
    print(
        f"\n### Dispatcher benchmark ({mode}): {args.events} events end to end "
        f"(client concurrency {args.e2e_concurrency}), accept phases {args.duration:.0f} s "
        f"with {args.loadgen}; Redis + SQLite, {WORKERS} prefork workers; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n"
    )
    print(table)
    print()
    print(details_table(results))
    print()
    for line in ratios(results):
        print(line)
    if phases:
        print(f"\n#### Constant rate (open loop, {args.duration:.0f} s per phase)\n")
        print(rate_table(phases))
    for result in results:
        if result.error:
            print(f"\n{result.system}: ERROR {result.error} (logs in {result.workdir})")
        print_profile(result)
    if census is not None:
        print("\n#### SQL census (in-process, per event)")
        print(json.dumps(census, indent=2))
    print(f"\nlogs and databases: {workdir}")
    if args.json:
        payload = {
            "mode": mode,
            "events": args.events,
            "concurrency": args.concurrency,
            "duration": args.duration,
            "loadgen": args.loadgen,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "results": [asdict(r) for r in results],
            "sql_census": census,
            "table": table,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
