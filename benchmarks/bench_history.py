"""Dry-run speed: one JSONPath over the last N stored events, with reasons for every non-match.

Usage: ``.venv/bin/python -m benchmarks.bench_history [--sizes 10000 100000] [--database URL]``

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


def main() -> None:
    """Run the benchmark and print one line per size and JSONPath."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--database", help="a database URL (default: a fresh SQLite file)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per JSONPath; the best counts")
    args = parser.parse_args()
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
