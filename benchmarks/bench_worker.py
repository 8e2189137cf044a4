"""The workers alone: drain rate and CPU per event, this dispatcher against upstream 0.2.5.

Each system starts as in ``bench_service`` (Redis + SQLite, the receiver and a
2-process prefork worker) and is warmed up. Then its worker is paused
(SIGSTOP to its process group), ``--events`` events are POSTed (10 client
threads, as in ``bench_service``'s end to end), the worker is resumed, and
the script waits until the recording handler has seen every event. It
reports the worker's drain rate (events / seconds from resume to the last
handled), the CPU seconds the worker's processes spent per event (user +
system, from ``/proc``: unlike rates, CPU per event hardly moves with the
machine's other load) and the receiver's CPU per event while posting.

Run from the repository root with the project venv::

    .venv/bin/python -m benchmarks.bench_worker              # 2,000 events, ours and upstream
    .venv/bin/python -m benchmarks.bench_worker --quick      # 300 events
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.bench_service import (
    Processes,
    Running,
    _fmt,
    post_events,
    start_system,
)

SYSTEMS = ("ours", "upstream")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Drain:
    """One system's worker measurement."""

    system: str
    events: int
    accepted: int = 0
    handled: int = 0
    drain_seconds: float | None = None
    worker_cpu_ms_per_event: float | None = None
    receiver_cpu_ms_per_event: float | None = None
    error: str | None = None

    @property
    def rate(self) -> float | None:
        """Events handled per second of draining."""
        return self.handled / self.drain_seconds if self.drain_seconds else None


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes in process group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime stime
                total += int(fields[11]) + int(fields[12])
    return total / TICK


def measure_drain(system: str, running: Running, events: int) -> Drain:
    """Pause the worker, post ``events`` events, resume it and time the drain."""
    result = Drain(system, events)
    worker, receiver = running.worker.popen.pid, running.receiver.popen.pid
    ids = [f"drain-{n}" for n in range(events)]
    os.killpg(worker, signal.SIGSTOP)
    try:
        receiver_before = group_cpu(receiver)
        posted = post_events(running.port, ids, 10)
        receiver_cpu = group_cpu(receiver) - receiver_before
    finally:
        cpu_before = group_cpu(worker)
        resumed = time.time()
        os.killpg(worker, signal.SIGCONT)
    result.accepted = len(posted.sent_at)
    running.record.wait_for(set(posted.sent_at), 600)
    worker_cpu = group_cpu(worker) - cpu_before
    handled = [min(running.record.times[i]) for i in ids if i in running.record.times]
    result.handled = len(handled)
    if handled:
        result.drain_seconds = max(handled) - resumed
        result.worker_cpu_ms_per_event = 1000 * worker_cpu / len(handled)
    if result.accepted:
        result.receiver_cpu_ms_per_event = 1000 * receiver_cpu / result.accepted
    return result


def measure_system(system: str, events: int, folder: Path) -> Drain:
    """Start one system fresh, warm it up, measure its worker's drain, stop it (always)."""
    folder.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    try:
        running = start_system(procs, folder, system)
        return measure_drain(system, running, events)
    except Exception as exc:
        logging.exception("%s failed", system)
        return Drain(system, events, error=f"{type(exc).__name__}: {exc}")
    finally:
        procs.stop_all()


def markdown_table(results: list[Drain]) -> str:
    """One row per system, then ours / upstream."""
    rows = [
        "| system | handled/accepted | drain s | worker events/s | worker CPU ms/event "
        "| receiver CPU ms/event |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error:
            rows.append(f"| {r.system} | error: {r.error} | | | | |")
            continue
        rows.append(
            f"| {r.system} | {r.handled}/{r.accepted} | {_fmt(r.drain_seconds, 2)} "
            f"| {_fmt(r.rate)} | {_fmt(r.worker_cpu_ms_per_event, 3)} "
            f"| {_fmt(r.receiver_cpu_ms_per_event, 3)} |"
        )
    by_name = {r.system: r for r in results if not r.error}
    ours, upstream = by_name.get("ours"), by_name.get("upstream")
    if ours and upstream and ours.rate and upstream.rate:
        cpu = (upstream.worker_cpu_ms_per_event or 0) / (ours.worker_cpu_ms_per_event or 1)
        rows.append(
            f"\nours / upstream: drain rate x{ours.rate / upstream.rate:.1f}, "
            f"worker CPU per event x{cpu:.1f} less"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Measure each system in turn and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per system [2000]")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 events")
    parser.add_argument("--workdir", type=Path, help="where databases and logs go")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    events = min(args.events, 300) if args.quick else args.events
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True
    )
    for sig in (signal.SIGTERM, signal.SIGHUP):  # unwind like Ctrl-C: every process is stopped
        signal.signal(sig, signal.default_int_handler)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dispatcher-drain-"))
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    results = [measure_system(s, events, workdir / s) for s in systems]
    print(
        f"\n### Workers alone: {events} events posted while the worker was paused, then "
        f"drained; Redis + SQLite, 2 prefork processes; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    print(markdown_table(results))
    print(f"\nlogs and databases: {workdir}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
