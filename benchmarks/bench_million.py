"""The service on an empty database and on one with a million stored events (issue 17).

    .venv/bin/python -m benchmarks.bench_million [--events 1000000] [--quick] [--rounds 3]
    TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python -m benchmarks.bench_million        # SQLite, then PostgreSQL too

Seeds ``--events`` events (``--quick``: 100,000) in one SQL statement per table:
ages spread over 30 days, final statuses mixed (2 % failed with a second,
failing route run, 6 % unrouted, 200 still waiting), one route run per routed
event, a delivery (in mixed states) for every tenth event. Then, on the empty
and on the seeded database in turn (same code, interleaved rounds), it times
in process: ``POST /receive`` (the WSGI app with the receiver's own intake),
the worker's ``dispatch.process_many`` over the events just received,
``GET /status/<id>``, ``GET /`` (first page, a page deep by ``?offset=`` and
the same depth by the ``Link: rel=next`` cursor), ``pacifica-dispatcher events
get`` and ``events purge --limit`` (with the longest ``POST /receive`` wait
while it ran, on the wall clock). Times are CPU time (``CLOCK``: this process,
and on PostgreSQL the server's processes too), so other jobs on a shared
machine do not count; rates are events per CPU second. Last, a real
``pacifica-dispatcher serve`` (receiver and its worker processes) runs over the
seeded database under HTTP load while the RSS of every process is sampled once
a second. Prints markdown tables (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import cherrypy

from benchmarks.bench_service import (
    Processes,
    base_env,
    free_port,
    http_ready,
    post_events,
    wait_until,
)
from pacifica.dispatcher import NoopEventHandler, Router, cli
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.intake import Intake
from pacifica.dispatcher.service.outbox import event_outbox
from pacifica.dispatcher.service.web import create_app
from pacifica.dispatcher.storage import events as stored_events
from pacifica.dispatcher.storage import open_database, sync_schema
from pacifica.dispatcher.storage.database import forget_connection
from pacifica.dispatcher.storage.schema import database_proxy
from pacifica.dispatcher.storage.values import utcnow
from tests.conftest import WSGIClient

ROOT = Path(__file__).resolve().parent.parent

# One template, two dialects: {n} events; {uuid} / {time} / {sub} are the dialect's expressions.
SEED = """
INSERT INTO dispatcher_event (uuid, event_id, source, event_type, spec_version, content_type,
    document, status, attempts, enqueued, started, finished, created, updated, transaction_id)
SELECT {uuid_i}, 'seed-' || i, '/pacifica/metadata/ingest', 'org.pacifica.metadata.ingest', '0.1',
    'application/json',
    '{{"cloudEventsVersion": "0.1", "eventType": "org.pacifica.metadata.ingest", "eventID": "seed-'
        || i || '", "source": "/pacifica/metadata/ingest", "data": [{{"destinationTable": '
        || '"Transactions._id", "value": ' || i || '}}]}}',
    CASE WHEN i > {n} - 200 THEN 202 WHEN i % 50 = 0 THEN 500 WHEN i % 17 = 0 THEN 422
        ELSE 200 END,
    CASE WHEN i > {n} - 200 THEN 0 ELSE 1 END, {t}, {t},
    CASE WHEN i > {n} - 200 THEN NULL ELSE {t} END, {t}, {t}, '' || i
FROM ({series}) AS s;
INSERT INTO dispatcher_route_run (event_id, route, handler, status, attempts, started, finished,
    created, updated)
SELECT uuid, 'index', 'bench.Index', 200, 1, created, finished, created, created
FROM dispatcher_event WHERE status IN (200, 500);
INSERT INTO dispatcher_route_run (event_id, route, handler, status, attempts, started, finished,
    created, updated, exc_type, exc_message, exc_traceback)
SELECT uuid, 'archive', 'bench.Archive', 500, 1, created, finished, created, created,
    'ConnectionError', 'archive refused the connection', 'Traceback (most recent call last): ...'
FROM dispatcher_event WHERE status = 500;
INSERT INTO dispatcher_subscription (uuid, name, jsonpath, "user", target_url, version,
    extensions, auth, failures, created, updated)
SELECT {uuid_sub}, 'hook ' || i, '$', 'user' || (i % 5), 'https://example.org/' || i, 'v0.1',
    '{{}}', '{{}}', 0, {now}, {now}
FROM ({series20}) AS s;
INSERT INTO dispatcher_delivery (uuid, event_id, subscription_id, status, attempts, budget_start,
    created, updated, finished, replay)
SELECT {uuid_d}, e.uuid, {uuid_sub_of_e}, CASE WHEN e.i % 97 = 0 THEN 410 WHEN e.i % 83 = 0
    THEN 403 ELSE 200 END, 1, e.created, e.created, e.created, e.created, 0
FROM (SELECT uuid, created, CAST(transaction_id AS INTEGER) AS i FROM dispatcher_event
      WHERE CAST(transaction_id AS INTEGER) % 10 = 0) AS e;
INSERT INTO dispatcher_delivery_attempt (delivery_id, number, kind, status_code, duration, created)
SELECT id, 1, 'target', status, 0.01, created FROM dispatcher_delivery;
"""

SQLITE = {
    "uuid_i": "lower(hex(randomblob(16)))",
    "uuid_sub": "printf('%032x', i)",
    "uuid_d": "lower(hex(randomblob(16)))",
    "uuid_sub_of_e": "printf('%032x', e.i / 10 % 20 + 1)",
    # peewee writes six digits of microseconds: so must the seed, or times compare as text wrongly
    "t": "(strftime('%Y-%m-%d %H:%M:%f', julianday('now') - 30.0 * ({n} - i) / {n}) || '000')",
    "now": "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')",
    "series": "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {n}) "
    "SELECT i FROM c",
    "series20": "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20) "
    "SELECT i FROM c",
}
POSTGRES = {
    "uuid_i": "md5('e' || i)::uuid",
    "uuid_sub": "lpad(to_hex(i), 32, '0')::uuid",
    "uuid_d": "md5('d' || e.i)::uuid",
    "uuid_sub_of_e": "lpad(to_hex(e.i / 10 % 20 + 1), 32, '0')::uuid",
    "t": "((now() AT TIME ZONE 'utc') - interval '30 days' * (({n} - i)::float / {n}))",
    "now": "(now() AT TIME ZONE 'utc')",
    "series": "SELECT i FROM generate_series(1, {n}) i",
    "series20": "SELECT i FROM generate_series(1, 20) i",
}


def seed(url: str, events: int) -> float:
    """Fill the (migrated, empty) database at ``url``; return the seconds it took."""
    database = open_database(url)
    dialect = SQLITE if url.startswith("sqlite") else POSTGRES
    parts = {k: v.replace("{n}", str(events)) for k, v in dialect.items()}
    script = SEED.format(n=events, **parts)
    if not url.startswith("sqlite"):
        script = script.replace("%", "%%")
    start = time.perf_counter()
    with database.atomic():
        for statement in script.split(";\n"):
            if statement.strip():
                database.execute_sql(statement)
    database.execute_sql("ANALYZE")
    if url.startswith("sqlite"):  # a WAL the size of the table would slow the first rounds
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - start


# --- one database: create, open -----------------------------------------------------------------


@dataclass
class Target:
    """A database under test: its URL, what it holds, and the ids the bench has seen in it."""

    label: str
    url: str
    seeded: int
    seeded_ids: list[str] = field(default_factory=list)


def sqlite_target(folder: Path, label: str, events: int) -> Target:
    url = f"sqlite:///{folder / label}.sqlite3"
    sync_schema(open_database(url))
    return Target(label, url, events)


@contextlib.contextmanager
def postgres_targets(admin_url: str, labels: list[str]) -> Iterator[dict[str, str]]:
    """A fresh database per label on the server at ``admin_url``, dropped afterwards."""
    admin = open_database(admin_url)
    names = {label: f"bench_million_{label}_{os.getpid()}" for label in labels}
    for name in names.values():
        admin.execute_sql(f"CREATE DATABASE {name}")
    try:
        yield {label: admin_url.rsplit("/", 1)[0] + f"/{n}" for label, n in names.items()}
    finally:
        forget_connection()
        admin = open_database(admin_url)
        for name in names.values():
            admin.execute_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def use(target: Target) -> None:
    """Point the models at ``target`` (a new connection)."""
    forget_connection()
    open_database(target.url)


# --- the operations -----------------------------------------------------------------------------


def receive_body(prefix: str, i: int) -> dict[str, Any]:
    return {
        "cloudEventsVersion": "0.1",
        "eventType": "org.pacifica.metadata.ingest",
        "eventID": f"{prefix}-{i}",
        "source": "/pacifica/metadata/ingest",
        "contentType": "application/json",
        "data": [{"destinationTable": "Transactions._id", "value": i}],
    }


# Time is CPU time, so the other jobs on a shared machine do not count: this process's
# (SQLite runs in it) plus, on PostgreSQL, the server's (its processes, and those that
# exited, through the postmaster's children's times).
TICK = os.sysconf("SC_CLK_TCK")
CLOCK: dict[str, Callable[[], float]] = {"process": time.process_time, "thread": time.thread_time}


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU of ``pid`` (and of its reaped children), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14])) * children
    return used / TICK


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def server_cpu(postmaster: int) -> float:
    """CPU the PostgreSQL server has used: the postmaster, its children, and the ones gone."""
    total = cpu_seconds(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if parent_of(int(entry)) == postmaster:
                    total += cpu_seconds(int(entry))
    return total


def backend_pid() -> int:
    """The PostgreSQL backend serving this thread's connection."""
    return int(database_proxy.execute_sql("SELECT pg_backend_pid()").fetchone()[0])


def use_clocks(target: Target) -> None:
    """CPU clocks for ``target``'s database (see ``CLOCK``)."""
    if target.url.startswith("sqlite"):
        CLOCK.update(process=time.process_time, thread=time.thread_time)
        return
    postmaster = parent_of(backend_pid())
    CLOCK["process"] = lambda: time.process_time() + server_cpu(postmaster)

    def thread() -> float:  # this thread's time and its backend's (the purge's)
        return time.thread_time() + cpu_seconds(backend_pid())

    CLOCK["thread"] = thread


def timed_ms(call: Callable[[], Any], runs: int) -> float:
    """Mean milliseconds of CPU (``CLOCK``) of ``runs`` calls after one warm-up call."""
    call()
    clock = CLOCK["process"]
    start = clock()
    for _ in range(runs):
        call()
    return (clock() - start) * 1000 / runs


def run_cli(argv: list[str], url: str) -> str:
    """``pacifica-dispatcher ARGV`` in process against ``url``; its standard output."""
    os.environ["DATABASE_URL"] = url
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(argv)
    if code != 0:
        raise RuntimeError(f"{argv} exited {code}")
    return out.getvalue()


def bench_router() -> Router:
    router = Router()
    router.add_route('$[?(@["eventType"] = "org.pacifica.metadata.ingest")]', NoopEventHandler())
    router.add_route(
        '$["data"][*][?(@["destinationTable"] = "Transactions._id")]', NoopEventHandler()
    )
    return router


def measure(target: Target, events: int, round_no: int) -> dict[str, float]:
    """One round of every operation on ``target``."""
    use(target)
    use_clocks(target)
    settings = Settings.from_env({"DATABASE_URL": target.url})
    intake = Intake(event_outbox(lambda ids, delay: ids, lease=3600).send)
    client = WSGIClient(create_app(settings, intake.submit), check_openapi=False)
    results: dict[str, float] = {}
    prefix = f"{target.label}-{round_no}-{uuidlib.uuid4().hex[:8]}"

    clock = CLOCK["process"]  # the intake's thread stores the events: the process's time
    start = clock()
    ids = []
    for i in range(events):
        response = client.post("/receive", receive_body(prefix, i))
        assert response.status == 202, response.body
        ids.append(response.json())
    results["POST /receive (events/s, 1 thread)"] = events / (clock() - start)
    intake.drain()

    router = bench_router()
    start = clock()
    for at in range(0, len(ids), 20):
        done = dispatch.process_many(ids[at : at + 20], router)
        assert all(s.http == "200 OK" for s in done.statuses.values()), done
    results["worker: dispatch.process_many (events/s)"] = len(ids) / (clock() - start)

    pool = target.seeded_ids or ids  # none of them purged (the purge takes older ones)
    picks = iter(random.choices(pool, k=1001))
    results["GET /status/<id> (ms)"] = timed_ms(lambda: client.get(f"/status/{next(picks)}"), 1000)
    results["GET / first page (ms)"] = timed_ms(lambda: client.get("/"), 50)
    depth = min(target.seeded, 500_000) or len(ids) // 2
    deep = f"/?offset={depth}"
    results["GET / ?offset= deep (ms)"] = timed_ms(lambda: client.get(deep), 5)
    link = client.get(f"/?offset={depth - 100}" if depth >= 100 else "/").headers.get("Link", "")
    if link:
        cursor = link.split(">", 1)[0].lstrip("<")
        results["GET / deep by Link rel=next (ms)"] = timed_ms(lambda: client.get(cursor), 50)
    results["events get (ms)"] = timed_ms(lambda: run_cli(["events", "get"], target.url), 10)
    one = random.choice(pool)
    results["events get <id> (ms)"] = timed_ms(
        lambda: run_cli(["events", "get", one], target.url), 5
    )
    results.update(purge_while_receiving(target, client, prefix, events))
    intake.drain()
    return results


def purge_while_receiving(
    target: Target, client: WSGIClient, prefix: str, limit: int
) -> dict[str, float]:
    """What ``events purge --limit LIMIT`` runs, on the oldest events, while one thread receives.

    In process, with the receiver's app: the purge's chunks and the receiver's
    commits take the same database's write lock, and the longest POST shows how
    long the receiver waited for it.
    """
    cutoff = (utcnow() - timedelta(days=15)) if target.seeded else utcnow()
    waits: list[float] = []
    stop = threading.Event()

    refused: list[int] = []

    def receive() -> None:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            status = client.post("/receive", receive_body(prefix + "-p", i)).status
            waits.append(time.perf_counter() - started)
            if status != 202:
                refused.append(status)
            i += 1

    sender = threading.Thread(target=receive, daemon=True)
    sender.start()
    start = CLOCK["thread"]()  # this thread purges; the receiving one runs beside it
    purged = stored_events.purge(cutoff, limit)  # what `events purge` runs
    seconds = CLOCK["thread"]() - start
    stop.set()
    sender.join()
    assert purged == limit, purged
    assert not refused, f"the receiver answered {refused} while the purge ran"
    return {
        f"events purge --limit {limit} (ms)": seconds * 1000,
        "longest POST /receive during purge (ms)": max(waits) * 1000 if waits else 0.0,
    }


# --- memory of a real service -------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def process_name(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        words = cmdline.read().split(b"\0")
    text = " ".join(w.decode(errors="replace") for w in words if w)
    return "worker" if "worker" in text or "celery" in text else "receiver"


def memory_run(url: str, seconds: float, folder: Path) -> tuple[dict[str, list[int]], int]:
    """RSS (KiB) of ``serve``'s processes, every second, while events are POSTed for ``seconds``."""
    procs = Processes()
    port = free_port()
    env = base_env(
        DATABASE_URL=url,
        DISPATCHER_DATA_DIR=str(folder / "data"),
        PYTHONPATH=str(ROOT),
    )
    command = [sys.executable, "-m", "pacifica.dispatcher", "serve", "--port", str(port)]
    server = procs.start("serve", command, env, ROOT, folder / "serve.log")
    series: dict[str, list[int]] = {}
    accepted: list[int] = []
    try:
        wait_until(lambda: http_ready(port), 120, "serve", server)
        stop = threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                sent = post_events(
                    port, [f"rss-{n + k}-{uuidlib.uuid4().hex}" for k in range(200)], 4
                )
                accepted.append(len(sent.sent_at))
                n += 200

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for pid in descendants(server.popen.pid):
                with contextlib.suppress(OSError):
                    series.setdefault(f"{process_name(pid)} {pid}", []).append(rss_kib(pid))
            time.sleep(1.0)  # the sampling interval, not synchronisation
        stop.set()
        loader.join()
    finally:
        procs.stop_all()
    return series, sum(accepted)


# --- report ---------------------------------------------------------------------------------------


def table(backend: str, empty: list[dict[str, float]], full: list[dict[str, float]], n: int) -> str:
    lines = [
        f"| {backend} (CPU time) | empty | {n:,} events | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in empty[0]:
        a = statistics.median(r[name] for r in empty if name in r)
        b = statistics.median(r[name] for r in full if name in r)
        rate = "events/s" in name
        ratio = b / a if a else float("nan")
        lines.append(f"| {name} | {a:,.1f} | {b:,.1f} | {ratio:.2f}{' (rate)' * rate} |")
    return "\n".join(lines)


def rss_table(series: dict[str, list[int]]) -> str:
    """Each process's RSS: first sample, once warm (a quarter into the run), last, highest."""
    lines = [
        "| process | samples | first MiB | warm MiB | last MiB | max MiB | last - warm |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in series.items():
        warm = values[len(values) // 4]
        mib = [v / 1024 for v in (values[0], warm, values[-1], max(values))]
        lines.append(
            f"| {name} | {len(values)} | "
            + " | ".join(f"{m:.1f}" for m in mib)
            + f" | {(values[-1] - warm) / 1024:+.1f} |"
        )
    return "\n".join(lines)


def run_backend(backend: str, urls: dict[str, str], args: argparse.Namespace, folder: Path) -> None:
    empty = Target("empty", urls["empty"], 0)
    full = Target("full", urls["full"], args.events)
    for target in (empty, full):
        use(target)
        sync_schema(open_database(target.url))
    print(f"{backend}: seeded {args.events:,} events in {seed(full.url, args.events):.0f} s")
    use(full)
    from pacifica.dispatcher.storage.schema import EventRecord, Subscription

    full.seeded_ids = [
        str(r.uuid)
        for r in EventRecord.select(EventRecord.uuid)
        .where(EventRecord.created > utcnow() - timedelta(days=14))  # younger than any purge
        .order_by(peewee_random())
        .limit(2000)
    ]
    rounds: dict[str, list[dict[str, float]]] = {"empty": [], "full": []}
    for round_no in range(args.rounds):
        for target in (empty, full) if round_no % 2 == 0 else (full, empty):
            rounds[target.label].append(measure(target, args.receive, round_no))
            print(f"  {backend} round {round_no + 1} {target.label} done", file=sys.stderr)
    print()
    print(table(backend, rounds["empty"], rounds["full"], args.events))
    print()
    if args.memory:
        use(full)  # no deliveries to the seeded subscriptions' example.org targets
        Subscription.update(deleted=utcnow()).execute()
        series, accepted = memory_run(full.url, args.memory, folder)
        print(
            f"RSS of `serve` over the {args.events:,}-event {backend} database, "
            f"{args.memory:.0f} s of POSTs (4 threads, {accepted:,} events accepted):"
        )
        print()
        print(rss_table(series))
        print()


def peewee_random() -> Any:
    import peewee

    return peewee.fn.random()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 events, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--receive", type=int, default=2000, help="events POSTed per round")
    parser.add_argument(
        "--memory", type=float, default=120, help="seconds of the RSS run (0: none)"
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # cli.main's basicConfig is then a no-op
    for handler in logging.getLogger().handlers:  # CherryPy's loggers are INFO: no line a request
        handler.setLevel(logging.WARNING)
    cherrypy.config.update({"log.screen": False})
    if args.quick:
        args.events, args.rounds, args.receive, args.memory = 100_000, 1, 1000, 30
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if args.only != "postgres":
            urls = {label: f"sqlite:///{folder / label}.sqlite3" for label in ("empty", "full")}
            run_backend("SQLite", urls, args, folder)
        admin = os.environ.get("TEST_POSTGRES_URL")
        if admin and args.only != "sqlite":
            with postgres_targets(admin, ["empty", "full"]) as urls:
                run_backend("PostgreSQL", urls, args, folder)


if __name__ == "__main__":
    main()
