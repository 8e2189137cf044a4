"""Time to match one event against N subscriptions: this project's index vs the upstream way.

Usage: ``.venv/bin/python -m benchmarks.bench_matching [--quick] [--sizes 1000 10000]
[--comparisons 0 0.01] [--events 200] [--slow-events 3]``

Strategies, one run, same subscriptions and events:

* ``upstream``: pacifica-notifications 0.5.2 ``dispatch_orm_event``: parse every
  subscription's JSONPath, then evaluate it with jsonpath2, for every event;
* ``jsonpath2, every path``: parse once, jsonpath2 evaluates every subscription;
* ``index + jsonpath2``: the ``MatchIndex`` candidates, evaluated by jsonpath2 (how the
  index worked before issue 17);
* ``index``: this project's ``MatchIndex``: candidates evaluated by their compiled
  predicates (``pacifica/dispatcher/predicate.py``), each distinct JSONPath once;
* ``matcher + revision query``: the ``Matcher`` the worker uses, i.e. the index plus the
  per-event revision query against a SQLite database holding the subscriptions.

Mix: 70 % ``eventType`` + a (destinationTable, value) data condition, 10 % the
same on 1.0 ``type``, 10 % a Files mimetype condition, 7 % other event types,
3 % an OR of two values. ``--comparisons 0.01`` turns 1 % of them into ``>``
comparisons, which no equality can exclude: those are candidates for every event.

Every strategy's matches are checked to be identical for every event. Times are the
median wall time per event and, for the index and the matcher, the mean process CPU
time per event (less disturbed by other load on the machine). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonpath2.path import Path as JSONPath

from pacifica.dispatcher.storage import open_database, sync_schema
from pacifica.dispatcher.storage.schema import Subscription
from pacifica.dispatcher.subscriptions.matching import Matcher, MatchIndex, brute_force

EVENT_FILE = Path(__file__).parent.parent / "tests" / "test_files" / "metadata_ingest_event.json"
INGEST = "org.pacifica.metadata.ingest"
TABLES = ("Transactions.instrument", "Transactions.project", "Transactions.submitter")


def subscription_paths(count: int, rng: random.Random, comparisons: float = 0.0) -> list[str]:
    """A realistic mix: most filter on eventType plus one data condition."""
    paths = []
    for _ in range(count):
        roll = rng.random()
        table, value = rng.choice(TABLES), rng.randint(1, 2000)
        data = f'@["destinationTable"] = "{table}" and @["value"] = {value}'
        if roll < comparisons:  # no selective equality: a candidate for every ingest event
            paths.append(
                f'$["data"][*][?(@["destinationTable"] = "{table}" and @["value"] > {value})]'
            )
        elif roll < 0.70:
            paths.append(f'$[?(@["eventType"] = "{INGEST}")]["data"][*][?({data})]')
        elif roll < 0.80:
            paths.append(f'$[?(@["type"] = "{INGEST}")]["data"][*][?({data})]')
        elif roll < 0.90:
            paths.append(f'$.data.*[?(@.destinationTable = "Files" and @.mimetype = "m/{value}")]')
        elif roll < 0.97:
            paths.append(f'$[?(@["eventType"] = "org.pacifica.metadata.orm.{value % 7}")]')
        else:  # an OR of equalities: filed under each branch's guard
            other = rng.randint(1, 2000)
            paths.append(f'$["data"][*][?(@["value"] = {value} or @["value"] = {other})]')
    return paths


def events(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Pacifica ingest events with varied instrument, project, submitter and file types."""
    base = json.loads(EVENT_FILE.read_text(encoding="utf-8"))
    made = []
    for number in range(count):
        event = json.loads(json.dumps(base))
        event["eventID"] = f"bench-{number}"
        for item in event["data"]:
            if item.get("destinationTable") in TABLES:
                item["value"] = rng.randint(1, 2000)
            if item.get("destinationTable") == "Files":
                item["mimetype"] = f"m/{rng.randint(1, 2000)}"
        made.append(event)
    return made


def per_event(
    run: Callable[[dict[str, Any]], list[str]], docs: list[dict[str, Any]]
) -> tuple[float, float, list[list[str]]]:
    """Median wall seconds and mean CPU seconds per event, and each event's matches."""
    times, results = [], []
    cpu = time.process_time()
    for doc in docs:
        started = time.perf_counter()
        results.append(run(doc))
        times.append(time.perf_counter() - started)
    return statistics.median(times), (time.process_time() - cpu) / len(docs), results


def upstream(paths: list[tuple[str, str]]) -> Callable[[dict[str, Any]], list[str]]:
    def run(doc: dict[str, Any]) -> list[str]:
        return brute_force(((key, JSONPath.parse_str(text)) for key, text in paths), doc)

    return run


def measure(
    size: int, docs: list[dict[str, Any]], slow_events: int, workdir: Path, comparisons: float
) -> dict[str, Any]:
    rng = random.Random(size)
    paths = subscription_paths(size, rng, comparisons)
    texts = [(f"{n:06d}", text) for n, text in enumerate(paths)]
    compiled = [(key, JSONPath.parse_str(text)) for key, text in texts]
    index = MatchIndex.build(compiled)
    matcher = matcher_over(texts, workdir / f"subs-{size}-{comparisons}.sqlite3")
    row: dict[str, Any] = {"size": size, "comparisons": comparisons}
    row["index_s"], row["index_cpu"], expected = per_event(index.match, docs)
    row["matcher_s"], row["matcher_cpu"], via_db = per_event(
        lambda d: sorted(texts_key(matcher.match(d))), docs
    )
    row["interpreted_s"], _, interpreted = per_event(
        lambda d: brute_force(((c.key, c.path) for c in index.candidates(d)), d), docs
    )
    slow = docs[:slow_events]
    row["preparsed_s"], _, brute = per_event(lambda d: brute_force(compiled, d), slow)
    row["upstream_s"], _, parsed_each_time = per_event(upstream(texts), slow)
    assert interpreted == expected, "index + jsonpath2 differs from the compiled index"
    assert via_db == expected, "matcher differs from the index"
    assert brute == expected[:slow_events], "jsonpath2 over every path differs from the index"
    assert parsed_each_time == expected[:slow_events], "upstream evaluation differs"
    row["candidates"] = statistics.mean(len(index.candidates(d)) for d in docs)
    row["matches_per_event"] = statistics.mean(len(m) for m in expected)
    return row


def matcher_over(texts: list[tuple[str, str]], database_file: Path) -> Matcher:
    database = open_database(f"sqlite:///{database_file}")
    sync_schema(database)
    rows = [
        {
            "uuid": _uuid(key),
            "name": key,
            "jsonpath": text,
            "user": "bench",
            "target_url": "http://x",
        }
        for key, text in texts
    ]
    with database.atomic():
        for start in range(0, len(rows), 500):
            Subscription.insert_many(rows[start : start + 500]).execute()
    matcher = Matcher()
    matcher.refresh()
    return matcher


def _uuid(key: str) -> str:
    return f"00000000-0000-0000-0000-{int(key):012d}"


def texts_key(uuids: list[str]) -> list[str]:
    return [f"{int(u.rsplit('-', 1)[1]):06d}" for u in uuids]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--events", type=int, default=200, help="events per fast strategy")
    parser.add_argument(
        "--slow-events", type=int, default=3, help="events for the two jsonpath2-only strategies"
    )
    parser.add_argument(
        "--comparisons",
        type=float,
        nargs="+",
        default=[0.0, 0.01],
        help="fractions of subscriptions with only a '>' data condition (one row each)",
    )
    parser.add_argument("--quick", action="store_true", help="10,000 subscriptions, 40 events")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.events, args.slow_events = [10000], 40, 1
    docs = events(args.events, random.Random(7))
    print(
        "| subscriptions | `>` filters | upstream 0.5.2 | jsonpath2, every path "
        "| index + jsonpath2 | index | index, CPU | matcher + revision query | matcher, CPU "
        "| candidates | matches |"
    )
    print("|---:" * 11 + "|")
    with tempfile.TemporaryDirectory() as workdir:
        for comparisons in args.comparisons:
            for size in args.sizes:
                row = measure(size, docs, args.slow_events, Path(workdir), comparisons)
                print(
                    f"| {size:,} | {comparisons:.0%} | {row['upstream_s'] * 1e3:,.0f} ms "
                    f"| {row['preparsed_s'] * 1e3:,.1f} ms | {row['interpreted_s'] * 1e3:.2f} ms "
                    f"| {row['index_s'] * 1e3:.3f} ms | {row['index_cpu'] * 1e3:.3f} ms "
                    f"| {row['matcher_s'] * 1e3:.3f} ms | {row['matcher_cpu'] * 1e3:.3f} ms "
                    f"| {row['candidates']:.1f} | {row['matches_per_event']:.2f} |",
                    flush=True,
                )
    print("\nidentical matches: yes (checked for every event and strategy)")


if __name__ == "__main__":
    main()
