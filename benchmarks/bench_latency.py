"""Idle latency: one event at a time on an idle system, from the POST to its final status.

Each system is started fresh (``bench_service``'s processes, Redis and
upstream venv), warmed up, and then sent ``--events`` events one at a time:
POST one event (a new connection, as Pacifica Metadata's ``requests.post``
does), poll the system's database every millisecond until the event's status
is final there (``200``/``422``/``500``; the recording handler has run
before that), pause ``--pause`` seconds (jittered ±50 % so that no polling
interval phase-locks with the sender), and send the next. The latency of an
event is the time from just before its POST to the first poll that saw its
status final; the handler's own record time is reported beside it.

Systems: ``ours`` (Redis + SQLite, the receiver and a 2-process prefork
worker, as in ``bench_service``), ``embedded`` (``pacifica-dispatcher serve``
with nothing configured: SQLite and the file broker in the data directory,
its worker started by ``serve``) and ``upstream`` (0.2.5 on Redis + SQLite).

Run from the repository root with the project venv::

    .venv/bin/python -m benchmarks.bench_latency                # 200 events per system
    .venv/bin/python -m benchmarks.bench_latency --quick        # 30 events per system
    .venv/bin/python -m benchmarks.bench_latency --systems embedded --events 500
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.bench_service import (
    ROOT,
    Processes,
    RecordFile,
    Running,
    _fmt,
    base_env,
    free_port,
    http_ready,
    percentile,
    post_events,
    start_system,
    wait_until,
    warm_up,
)

SYSTEMS = ("ours", "embedded", "upstream")
POLL_EVERY = 0.001  # seconds between two reads of the event's status
# Each system's final-status query by event id (the benchmark's events all have one source).
FINAL_QUERY = {
    "ours": "SELECT 1 FROM dispatcher_event WHERE event_id = ? AND status IN (200, 422, 500)",
    "upstream": "SELECT 1 FROM receivetaskmodel WHERE event_id = ? AND task_status IN "
    "('200 OK', '422 Unprocessable Entity', '500 Internal Server Error')",
}


@dataclass
class Latency:
    """The idle-latency measurement of one system."""

    system: str
    events: int
    final: int = 0
    timed_out: int = 0
    post_failures: int = 0
    final_ms: list[float] = field(default_factory=list)
    handled_ms: list[float] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict[str, float | None]:
        """p50, p99 and max of receive → final, and p50/p99 of receive → handler ran, in ms."""

        def at(values: list[float], fraction: float) -> float | None:
            return percentile(values, fraction) if values else None

        return {
            "final_p50": at(self.final_ms, 0.50),
            "final_p99": at(self.final_ms, 0.99),
            "final_max": max(self.final_ms, default=None),
            "handled_p50": at(self.handled_ms, 0.50),
            "handled_p99": at(self.handled_ms, 0.99),
        }


def start_embedded(procs: Processes, folder: Path) -> Running:
    """``serve`` with nothing configured but its data directory: SQLite and the file broker."""
    record = folder / "handled.txt"
    env = base_env(
        DISPATCHER_DATA_DIR=str(folder / "data"),
        BENCH_RECORD_FILE=str(record),
        PYTHONPATH=str(ROOT),
    )
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.bench_app", "serve", "--port", str(port)]
    receiver = procs.start("embedded", command, env, ROOT, folder / "serve.log")
    wait_until(lambda: http_ready(port), 60, "embedded service", receiver)
    return Running(port, 0, RecordFile(record), receiver, receiver)


def database_file(system: str, folder: Path) -> Path:
    """Where the system started in ``folder`` keeps its SQLite database."""
    if system == "embedded":
        from pacifica.dispatcher.config import Settings

        url = Settings(data_dir=str(folder / "data")).effective_database_url
        return Path(url.removeprefix("sqlite:///"))
    return folder / ("upstream.sqlite3" if system == "upstream" else "ours.sqlite3")


def wait_final(database: sqlite3.Connection, query: str, event_id: str, timeout: float) -> float:
    """Poll until the event's status is final; the time.time() of the poll that saw it.

    Raises:
        TimeoutError: it was not final within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if database.execute(query, (event_id,)).fetchone() is not None:
                return time.time()
        except sqlite3.OperationalError:  # the table is not there yet, or a writer holds it
            pass
        time.sleep(POLL_EVERY)
    raise TimeoutError(f"event {event_id} not final after {timeout:.0f} s")


def measure_idle(system: str, running: Running, folder: Path, args: argparse.Namespace) -> Latency:
    """Send ``args.events`` events one at a time, each after the previous one was final."""
    result = Latency(system, args.events)
    query = FINAL_QUERY["upstream" if system == "upstream" else "ours"]
    path = database_file(system, folder)
    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5, isolation_level=None)
    jitter = random.Random(17)
    sent: dict[str, float] = {}
    try:
        for number in range(args.events):
            event_id = f"idle-{number}"
            posted = post_events(running.port, [event_id], 1)
            if event_id not in posted.sent_at:
                result.post_failures += 1
                continue
            sent[event_id] = posted.sent_at[event_id]
            try:
                seen = wait_final(database, query, event_id, args.timeout)
            except TimeoutError:
                result.timed_out += 1
                continue
            result.final += 1
            result.final_ms.append((seen - sent[event_id]) * 1000)
            time.sleep(args.pause * jitter.uniform(0.5, 1.5))  # idle again, on purpose
    finally:
        database.close()
    running.record.poll()
    result.handled_ms = [
        (min(running.record.times[i]) - t) * 1000
        for i, t in sent.items()
        if i in running.record.times
    ]
    return result


def measure_system(system: str, args: argparse.Namespace, folder: Path) -> Latency:
    """Start one system fresh, warm it up, measure idle latency, stop it (always)."""
    folder.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    try:
        if system == "embedded":
            running = start_embedded(procs, folder)
            warm_up(running)
        else:
            running = start_system(procs, folder, system)
        time.sleep(1)  # let the warm-up's stragglers finish: the measurement starts idle
        return measure_idle(system, running, folder, args)
    except Exception as exc:
        logging.exception("%s failed", system)
        return Latency(system, args.events, error=f"{type(exc).__name__}: {exc}")
    finally:
        procs.stop_all()


def markdown_table(results: list[Latency]) -> str:
    """One row per system: receive → final p50/p99/max and receive → handled p50/p99, in ms."""
    rows = [
        "| system | events final/sent | final p50 ms | final p99 ms | final max ms "
        "| handled p50 ms | handled p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if result.error:
            rows.append(f"| {result.system} | error: {result.error} | | | | | |")
            continue
        s = result.summary()
        cells = [f"{result.final}/{result.events}"]
        cells += [_fmt(s[k], 1) for k in ("final_p50", "final_p99", "final_max")]
        cells += [_fmt(s[k], 1) for k in ("handled_p50", "handled_p99")]
        rows.append(f"| {result.system} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200, help="events per system [200]")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--pause", type=float, default=0.2, help="seconds between events, jittered ±50 %% [0.2]"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait per event")
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 events per system")
    parser.add_argument("--workdir", type=Path, help="where databases and logs go")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = min(args.events, 30)
    args.system_list = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.system_list) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every requested system in turn and print the table."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True
    )
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind like Ctrl-C: every process is stopped
        signal.signal(sig, signal.default_int_handler)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dispatcher-latency-"))
    results = [measure_system(s, args, workdir / s) for s in args.system_list]
    load = os.getloadavg()[0]
    print(
        f"\n### Idle latency: {args.events} events one at a time, {args.pause:g} s (±50 %) apart; "
        f"POST → status final in the database (polled every {POLL_EVERY * 1000:g} ms); "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end, "
        f"Python {platform.python_version()}\n"
    )
    print(markdown_table(results))
    print(f"\nlogs and databases: {workdir}")
    if args.json:
        args.json.write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=2))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
