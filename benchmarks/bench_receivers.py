"""Receiver servers side by side, in interleaved rounds: upstream, ``serve`` (with 1 or
more receiver processes) and gunicorn serving the same WSGI app (issue 17).

For each round and each variant, the receiver starts afresh (Redis, SQLite, 2
prefork workers consuming, as in ``bench_service``), wrk loads it at c=10 and
c=50 with unique bodies, and the CPU (user + system) of the receiver's process
group (parent and children, from /proc), and of the worker's, is divided by
the requests accepted::

    .venv/bin/python -m benchmarks.bench_receivers [--variants upstream,serve1,gthread2] \\
        [--rounds 3] [--quick]

Variants: ``upstream`` (upstream 0.2.5 on CherryPy's server, as in
``bench_service``), ``serveN`` (``serve`` with RECEIVER_PROCESSES=N; N > 1 only
where that setting exists), ``gthreadN`` (gunicorn, N gthread workers of 16
threads), ``syncN`` (gunicorn, N sync workers). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench_service import Processes, accept_rate, start_ours, start_upstream
from pacifica.dispatcher.config import Settings

WSGI_APP = "benchmarks.bench_app_wsgi:application"


def server_command(variant: str) -> Callable[[str, int], list[str]] | None:
    """The receiver command of ``variant`` (None: ``serve``, with RECEIVER_PROCESSES set)."""
    kind, count = variant.rstrip("0123456789"), variant[len(variant.rstrip("0123456789")) :]
    if kind == "upstream":
        return None
    if kind == "serve":
        if int(count) > 1 and not hasattr(Settings, "receiver_processes"):
            raise SystemExit(
                f"{variant}: this code has no RECEIVER_PROCESSES setting (BENCHMARKS.md, issue 17:"
                " it is on the branch perf-serve-receivers)"
            )
        os.environ["RECEIVER_PROCESSES"] = count
        return None
    if kind not in ("gthread", "sync"):
        raise SystemExit(f"unknown variant {variant!r}")
    threads = ["--threads", "16"] if kind == "gthread" else []
    return lambda python, port: [
        *(python, "-m", "gunicorn", "-k", kind, "-w", count, *threads),
        *("-b", f"127.0.0.1:{port}", "--log-level", "warning", WSGI_APP),
    ]


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 (pgrp), after pid, comm and state
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def run(
    variants: list[str], rounds: int, duration: float, workdir: Path
) -> list[dict[str, object]]:
    """One row per round, setting and concurrency."""
    rows: list[dict[str, object]] = []
    for round_ in range(1, rounds + 1):
        for variant in variants:
            command = server_command(variant)
            procs = Processes()
            folder = workdir / f"r{round_}-{variant}"
            folder.mkdir(parents=True)
            try:
                if variant == "upstream":
                    running = start_upstream(procs, folder, uwsgi=False)
                else:
                    running = start_ours(procs, folder, uwsgi=False, server=command)
                pgid, worker_pgid = running.receiver.popen.pid, running.worker.popen.pid
                for concurrency in (10, 50):
                    before = _group_cpu_seconds(pgid), _group_cpu_seconds(worker_pgid)
                    result = accept_rate(
                        running.port,
                        concurrency,
                        duration,
                        f"r{round_}{variant}c{concurrency}",
                        "wrk",
                    )
                    cpu = _group_cpu_seconds(pgid) - before[0]
                    worker_cpu = _group_cpu_seconds(worker_pgid) - before[1]
                    rows.append(
                        {
                            "round": round_,
                            "variant": variant,
                            "c": concurrency,
                            "rate": result.rate,
                            "p50": result.latency_p50_ms,
                            "p99": result.latency_p99_ms,
                            "cpu_ms": 1000 * cpu / max(result.accepted, 1),
                            "worker_ms": 1000 * worker_cpu / max(result.accepted, 1),
                            "load": os.getloadavg()[0],
                        }
                    )
                    print(rows[-1], file=sys.stderr, flush=True)
            finally:
                procs.stop_all()
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| round | receiver | c | accepted/s | p50/p99 ms | receiver CPU ms/request | worker CPU ms/request | load |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['variant']} | {r['c']} | {r['rate']:,.0f} | "
            f"{r['p50']:.0f}/{r['p99']:.0f} | {r['cpu_ms']:.2f} | "
            f"{r['worker_ms']:.2f} | {r['load']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--variants", default="upstream,serve1,gthread2", help="[upstream,serve1,gthread2]"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds [3]")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk phase [8]")
    parser.add_argument("--quick", action="store_true", help="one round, 3 s phases")
    args = parser.parse_args()
    rounds, duration = (1, 3.0) if args.quick else (args.rounds, args.duration)
    variants = args.variants.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="bench-receivers-"))
    print(table(run(variants, rounds, duration, workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
