"""An open-loop (constant-rate) load generator for ``POST /receive``.

wrk is closed loop: a slow answer delays the next request, so a stall hides
itself (coordinated omission) and wrk2 is not available here. This generator
sends request *i* at ``start + i / rate`` whatever happened before, and
measures each latency from that *scheduled* time: a request that waited for a
free connection, or behind a slow one, is counted as slow.

Each client process runs an asyncio loop with raw HTTP/1.1 over a fixed pool
of keep-alive connections (``connections`` in all, opened before the clock
starts). A request due while every connection is busy waits for one, and that
wait counts as latency. The pool is bounded on purpose: uWSGI's
``--http11-socket`` holds a thread per open connection, so more connections
than its 16 threads would measure its accept queue, not the application.

Run on its own, to measure a server or the generator's own ceiling::

    .venv/bin/python -m benchmarks.rate_load --port 8051 --rate 1000 --duration 10
    .venv/bin/python -m benchmarks.rate_load --self-test            # against a trivial server
    .venv/bin/python -m benchmarks.rate_load --overload --rate 3000 --connections 120

``bench_service --rate 500,80%`` runs it as a phase against every system.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.bench_service import event_body

CONNECTIONS = 16  # in all, shared out between the client processes
TIMEOUT = 30.0  # seconds for one request, counted as "timeout"


@dataclass
class RateResult:
    """One constant-rate phase: offered and achieved rate, latency from the scheduled time."""

    offered: float
    seconds: float  # from the first scheduled send to the last answer
    sent: int
    statuses: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    late_ms: float = 0.0  # how far the generator itself fell behind its schedule, at worst
    connections: int = 0

    @property
    def achieved(self) -> float:
        """Answers per second (any status) over the phase."""
        return sum(self.statuses.values()) / self.seconds if self.seconds else 0.0

    def count(self, kind: str) -> int:
        """How many answers were of this kind ("2xx", "503", ...)."""
        return self.statuses.get(kind, 0)


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _kind(status: int) -> str:
    if 200 <= status < 300:
        return "2xx"
    return str(status)


def _request(event_id: str) -> bytes:
    body = event_body(event_id)
    head = (
        "POST /receive HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> tuple[int, bool]:
    """Send one request, read its answer: (status, the connection can be reused)."""
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length:
        await reader.readexactly(length)
    return status, keep


class _Client:
    """One process's share of the load."""

    def __init__(self, port: int, prefix: str, connections: int) -> None:
        self.port = port
        self.prefix = prefix
        self.connections = connections
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.slots = asyncio.Semaphore(connections)
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.late = 0.0
        self.last = 0.0  # when the last answer came

    async def one(self, number: int, scheduled: float) -> None:
        payload = _request(f"{self.prefix}-{number}")
        try:
            async with self.slots:
                status = await asyncio.wait_for(self._send(payload), TIMEOUT)
            kind = _kind(status)
        except asyncio.TimeoutError:
            kind = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            kind = type(exc).__name__
        self.last = time.monotonic()
        self.latencies.append(self.last - scheduled)
        self.statuses[kind] += 1

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return reader, writer

    async def _send(self, payload: bytes) -> int:
        reader, writer = self.idle.pop() if self.idle else await self._connect()
        try:
            status, keep = await _exchange(reader, writer, payload)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status

    async def run(self, rate: float, duration: float, start: float) -> None:
        self.idle = list(await asyncio.gather(*(self._connect() for _ in range(self.connections))))
        total = int(rate * duration)
        tasks = set()
        for number in range(total):
            scheduled = start + number / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.late = max(self.late, -delay)
            task = asyncio.ensure_future(self.one(number, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks), timeout=TIMEOUT + 5)
        for _reader, writer in self.idle:
            writer.close()


def _client_process(
    port: int, rate: float, duration: float, start: float, prefix: str, connections: int
) -> tuple[list[float], dict[str, int], float, int, float]:
    client = _Client(port, prefix, connections)
    asyncio.run(client.run(rate, duration, start))
    return client.latencies, dict(client.statuses), client.late, client.opened, client.last


def open_loop(
    port: int,
    rate: float,
    duration: float,
    prefix: str,
    processes: int = 2,
    connections: int = CONNECTIONS,
) -> RateResult:
    """POST unique events at ``rate`` per second for ``duration`` s from ``processes`` processes
    over ``connections`` keep-alive connections in all.

    Latency runs from each request's scheduled send time to its answer.
    """
    share = rate / processes
    per_process = max(1, connections // processes)
    # CLOCK_MONOTONIC is system wide on Linux: every process schedules from the same start.
    start = time.monotonic() + 1.0
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = [
            pool.submit(
                _client_process, port, share, duration, start, f"{prefix}-p{n}", per_process
            )
            for n in range(processes)
        ]
        parts = [f.result(timeout=duration + TIMEOUT + 60) for f in futures]
    latencies = sorted(x for part in parts for x in part[0])
    statuses: Counter[str] = Counter()
    for part in parts:
        statuses.update(part[1])
    return RateResult(
        offered=rate,
        # Answers that come late stretch the phase: the rate is over the time they took.
        seconds=max(duration, max(part[4] for part in parts) - start),
        sent=len(latencies),
        statuses=dict(statuses),
        p50_ms=_ms(_quantile(latencies, 0.50)),
        p99_ms=_ms(_quantile(latencies, 0.99)),
        p999_ms=_ms(_quantile(latencies, 0.999)),
        max_ms=_ms(latencies[-1] if latencies else None),
        late_ms=max(part[2] for part in parts) * 1000,
        connections=sum(part[3] for part in parts),
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# --- the generator's own ceiling: a trivial server -----------------------------------------------

_TRIVIAL_ANSWER = (
    b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


async def _trivial_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(_TRIVIAL_ANSWER)
    writer.close()


def _trivial_server(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_trivial_connection, sock=sock)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def self_test(
    rates: list[float], duration: float, processes: int, connections: int
) -> list[RateResult]:
    """Run the generator against a trivial one-process asyncio server answering 202 at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(
        target=_trivial_server, args=(sock,), daemon=True
    )
    server.start()
    try:
        return [
            open_loop(port, rate, duration, f"self{rate:.0f}", processes, connections)
            for rate in rates
        ]
    finally:
        server.terminate()
        server.join(5)
        sock.close()


def overload(
    rate: float, duration: float, processes: int, connections: int, backlogs: list[str]
) -> list[tuple[str, RateResult]]:
    """Our built-in server (``serve``, Redis, workers consuming) past its capacity, once per
    ``RECEIVE_BACKLOG`` value: how long requests queue, how many are refused."""
    from benchmarks import bench_service as bench  # the systems' start-up lives there

    measured = []
    workdir = Path(tempfile.mkdtemp(prefix="dispatcher-overload-"))
    for backlog in backlogs:
        os.environ["RECEIVE_BACKLOG"] = backlog  # start_ours passes the environment on
        procs = bench.Processes()
        folder = workdir / f"backlog-{backlog}"
        folder.mkdir()
        try:
            running = bench.start_ours(procs, folder, uwsgi=False)
            open_loop(running.port, 200, 2, f"warm{backlog}", processes, connections)
            prefix = f"over{backlog}-{time.time()}"
            measured.append(
                (backlog, open_loop(running.port, rate, duration, prefix, processes, connections))
            )
        finally:
            procs.stop_all()
            os.environ.pop("RECEIVE_BACKLOG", None)
    return measured


def markdown(results: list[tuple[str, RateResult]]) -> str:
    """The phases (label, result) as a Markdown table."""
    rows = [
        "| system | offered/s | achieved/s | p50 ms | p99 ms | p99.9 ms | max ms | 2xx | 503 | other | connections | generator late ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results:
        other = sum(v for k, v in r.statuses.items() if k not in ("2xx", "503"))
        cells = [label, f"{r.offered:,.0f}", f"{r.achieved:,.0f}"]
        cells += [_fmt(r.p50_ms), _fmt(r.p99_ms), _fmt(r.p999_ms), _fmt(r.max_ms)]
        cells += [str(r.count("2xx")), str(r.count("503")), str(other), str(r.connections)]
        cells.append(f"{r.late_ms:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def main(argv: list[str] | None = None) -> int:
    """Command line: one server (``--port``) or the self-test."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, help="the receiver's port on 127.0.0.1")
    parser.add_argument("--rate", default="1000", help="comma-separated requests/s [1000]")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate [10]")
    parser.add_argument("--processes", type=int, default=2, help="client processes [2]")
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help=f"in all [{CONNECTIONS}]"
    )
    parser.add_argument("--self-test", action="store_true", help="against a trivial server")
    parser.add_argument(
        "--overload",
        action="store_true",
        help="start our built-in server once per --backlogs value and run --rate against it",
    )
    parser.add_argument(
        "--backlogs", default="56,100000", help="RECEIVE_BACKLOG values for --overload"
    )
    parser.add_argument("--quick", action="store_true", help="3 s per rate")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = min(args.duration, 3.0)
    rates = [float(r) for r in args.rate.split(",")]
    if args.self_test:
        tested = self_test(rates, args.duration, args.processes, args.connections)
        print(markdown([("trivial server", r) for r in tested]))
        return 0
    if args.overload:
        backlogs = args.backlogs.split(",")
        runs = overload(rates[0], args.duration, args.processes, args.connections, backlogs)
        print(markdown([(f"serve, RECEIVE_BACKLOG={b}", r) for b, r in runs]))
        return 0
    if args.port is None:
        parser.error("--port, --self-test or --overload")
    prefix = f"rate-{os.getpid()}-{int(time.time())}"
    results = [
        open_loop(
            args.port, r, args.duration, f"{prefix}-{r:.0f}", args.processes, args.connections
        )
        for r in rates
    ]
    print(markdown([(f"127.0.0.1:{args.port}", r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
