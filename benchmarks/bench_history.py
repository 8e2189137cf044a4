"""Dry-run speed: one JSONPath over the last N stored events, with reasons for every non-match;
and the memory a replay over a large selection needs.

Usage: ``.venv/bin/python -m benchmarks.bench_history [--sizes 10000 100000] [--database URL]``

``--plan 100000 1000000 [--code DIR] [--quick]`` measures instead the peak
memory (RSS) a subscription replay of every stored event in a time range
needs to plan (select and match) and store (one delivery per event):
each size runs in a fresh child process, whose growth of peak RSS over its
start is reported with the time, as a markdown table. ``--code DIR`` runs the
children on another checkout's package (``git archive main | tar -x -C DIR``)
for a before/after comparison; ``--quick`` is ``--plan 20000``.

The events are copies of the real event Pacifica Metadata emits
(``tests/test_files/metadata_ingest_event.json``) with their own id, source,
transaction number and file mimetypes, stored in a fresh SQLite database
(or ``--database``). Three JSONPaths: the reference consumer example's
(matches none: every event is explained), one matching about a third of
the events (text/plain files) and one matching all (``eventType``). Each is
timed end to end as ``jsonpath test`` runs it: read the last N documents,
match, explain the rest, group the reasons.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pacifica.dispatcher.history.dryrun import Selection, dry_run
from pacifica.dispatcher.storage import open_database, sync_schema, write_transaction
from pacifica.dispatcher.storage.events import NewEvent, insert_events
from pacifica.dispatcher.subscriptions.registry import compile_jsonpath

EVENT_FILE = Path(__file__).parent.parent / "tests" / "test_files" / "metadata_ingest_event.json"
REFERENCE = (
    '$[?(@["eventID"] and (@["eventType"] = "org.pacifica.metadata.ingest") and '
    '(@["source"] = "/pacifica/metadata/ingest"))]["data"][*][?((@["destinationTable"] = '
    '"Files") and (@["mimetype"] = "text/plain"))]["_id"]'
)
PATHS = {
    "reference (matches none)": REFERENCE,
    "text/plain files (1/3)": '$["data"][*][?(@["destinationTable"] = "Files" and '
    '@["mimetype"] = "text/plain")]["_id"]',
    "eventType (all)": '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]',
}


def store(count: int, offset: int = 0) -> None:
    """Store ``count`` Metadata events, one transaction number each, numbered from ``offset``."""
    template = json.loads(EVENT_FILE.read_text(encoding="utf-8"))
    start = datetime.now(timezone.utc) - timedelta(days=1)
    for first in range(offset, offset + count, 1000):
        rows = []
        for n in range(first, min(offset + count, first + 1000)):
            document = copy.deepcopy(template)
            document["eventID"] = f"metadata.ingest.{n}"
            document["source"] = f"http://metadata.pacifica.org/transactions?_id={n}"
            document["data"][-1]["value"] = n
            document["data"][4]["mimetype"] = "text/plain" if n % 3 == 0 else "image/png"
            created = start + timedelta(milliseconds=n)
            rows.append(_new(document, created))
        with write_transaction():
            insert_events(rows)


def _new(document: Any, created: datetime) -> NewEvent:
    return NewEvent(
        uuid.uuid4(),
        document["eventID"],
        document["source"],
        document["eventType"],
        "0.1",
        None,
        "application/json",
        document,
        created,
    )


def measure_plan(url: str) -> dict[str, float]:
    """In this (fresh) process: plan and store a replay of every stored event to a new
    subscription matching a third of them; peak RSS growth (MiB), seconds, events."""
    from pacifica.dispatcher.history import replay
    from pacifica.dispatcher.storage.subscriptions import insert_subscription

    open_database(url)
    subscription = insert_subscription(
        "bench",
        {"name": "plan", "jsonpath": PATHS["text/plain files (1/3)"], "target_url": "http://x/"},
    )
    selection = Selection(last=None, since=datetime.now(timezone.utc) - timedelta(days=2))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    chosen = replay.plan(subscription, selection, None)
    replay.start(subscription, selection, chosen, "bench", 10.0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_mib": (peak - before) / 1024, "seconds": seconds, "events": len(chosen.events)}


def plan_table(sizes: list[int], code: str | None) -> None:
    """Store each size (cumulatively) and measure a replay plan over it in a child process."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code
    print("| stored events | replayed | peak RSS growth | plan + store |")
    print("|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{scratch}/plan.sqlite3"
        child = [sys.executable, __file__]
        subprocess.run([*child, "--sync", url], env=env, check=True)  # the children's schema
        open_database(url)
        stored = 0
        for size in sorted(sizes):
            store(size - stored, stored)
            stored = size
            measured = subprocess.run(
                [*child, "--measure-plan", url],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            found = json.loads(measured.stdout.strip().splitlines()[-1])
            print(
                f"| {size:,} | {found['events']:,} | {found['rss_mib']:,.0f} MiB "
                f"| {found['seconds']:.1f} s |"
            )


def main() -> None:
    """Run the benchmark and print one line per size and JSONPath (or the plan table)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--database", help="a database URL (default: a fresh SQLite file)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per JSONPath; the best counts")
    parser.add_argument("--plan", type=int, nargs="+", help="replay plan memory over N events")
    parser.add_argument("--code", help="with --plan: run the children on this checkout")
    parser.add_argument("--quick", action="store_true", help="--plan 20000")
    parser.add_argument("--measure-plan", help=argparse.SUPPRESS)  # the child's entries
    parser.add_argument("--sync", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sync:
        sync_schema(open_database(args.sync))
        return
    if args.measure_plan:
        print(json.dumps(measure_plan(args.measure_plan)))
        return
    if args.plan or args.quick:
        plan_table(args.plan or [20_000], args.code)
        return
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database or f"sqlite:///{scratch}/bench.sqlite3"
        sync_schema(open_database(url))
        stored = 0
        for size in sorted(args.sizes):
            store(size - stored, stored)
            stored = size
            for name, text in PATHS.items():
                path = compile_jsonpath(text)
                best, run = float("inf"), None
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    run = dry_run(text, path, Selection(last=size))
                    best = min(best, time.perf_counter() - started)
                assert run is not None
                assert run.examined == size
                print(
                    f"{size:>7} events  {name:<26} {best:7.3f} s  "
                    f"matched {run.matched:>6}  reasons {len(run.reasons)}"
                )


if __name__ == "__main__":
    main()
