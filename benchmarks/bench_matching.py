"""Time to match one event against N subscriptions: this project's index vs the upstream way.

Usage: ``.venv/bin/python -m benchmarks.bench_matching [--sizes 1000 10000] [--events 200]``

Three strategies, one run, same subscriptions and events:

* ``upstream``: pacifica-notifications 0.5.2 ``dispatch_orm_event``: parse every
  subscription's JSONPath, then evaluate it, for every event;
* ``pre-parsed``: parse once, evaluate every subscription per event (brute force);
* ``index``: this project's ``MatchIndex`` (parse once, evaluate only candidates);
* ``matcher``: the ``Matcher`` the worker uses, i.e. the index plus the per-event
  revision query against a SQLite database holding the subscriptions.

Mix: 70 % ``eventType`` + a (destinationTable, value) data condition, 10 % the
same on 1.0 ``type``, 10 % a Files mimetype condition, 7 % other event types,
3 % an OR of two values. ``--comparisons 0.01`` turns 1 % of them into ``>``
comparisons, which no equality can exclude: those are evaluated for every event.

Every strategy's matches are checked to be identical for every event.
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
from pacifica.dispatcher.subscriptions.matching import Matcher, MatchIndex, brute_force, evaluate

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
) -> tuple[float, list[list[str]]]:
    """Median seconds per event, and each event's matches."""
    times, results = [], []
    for doc in docs:
        started = time.perf_counter()
        results.append(run(doc))
        times.append(time.perf_counter() - started)
    return statistics.median(times), results


def upstream(paths: list[tuple[str, str]]) -> Callable[[dict[str, Any]], list[str]]:
    def run(doc: dict[str, Any]) -> list[str]:
        return sorted(key for key, text in paths if evaluate(JSONPath.parse_str(text), doc))

    return run


def measure(
    size: int, docs: list[dict[str, Any]], upstream_events: int, workdir: Path, comparisons: float
) -> dict[str, Any]:
    rng = random.Random(size)
    paths = subscription_paths(size, rng, comparisons)
    texts = [(f"{n:06d}", text) for n, text in enumerate(paths)]
    started = time.perf_counter()
    compiled = [(key, JSONPath.parse_str(text)) for key, text in texts]
    parse_all = time.perf_counter() - started
    index = MatchIndex.build(compiled)
    matcher = matcher_over(texts, workdir / f"subs-{size}.sqlite3")
    row: dict[str, Any] = {"size": size, "parse_all_s": parse_all, "always": len(index.always)}
    row["index_s"], expected = per_event(index.match, docs)
    row["matcher_s"], via_db = per_event(lambda d: sorted(texts_key(matcher.match(d), texts)), docs)
    row["preparsed_s"], brute = per_event(lambda d: brute_force(compiled, d), docs)
    row["upstream_s"], slow = per_event(upstream(texts), docs[:upstream_events])
    assert brute == expected, "index differs from brute force"
    assert via_db == expected, "matcher differs from brute force"
    assert slow == expected[:upstream_events], "upstream evaluation differs"
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


def texts_key(uuids: list[str], texts: list[tuple[str, str]]) -> list[str]:
    del texts
    return [f"{int(u.rsplit('-', 1)[1]):06d}" for u in uuids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--events", type=int, default=200, help="events per strategy")
    parser.add_argument(
        "--upstream-events", type=int, default=3, help="events for the slow upstream way"
    )
    parser.add_argument(
        "--comparisons",
        type=float,
        default=0.0,
        help="fraction of subscriptions with only a '>' data condition (candidates for every event)",
    )
    args = parser.parse_args()
    docs = events(args.events, random.Random(7))
    print(
        f"{'subs':>6} {'upstream':>10} {'pre-parsed':>11} {'index':>9} {'matcher+db':>11} {'speed-up':>9} {'always':>7} {'matches':>8}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for size in args.sizes:
            row = measure(size, docs, args.upstream_events, Path(workdir), args.comparisons)
            print(
                f"{row['size']:>6} {row['upstream_s'] * 1e3:>8.0f}ms {row['preparsed_s'] * 1e3:>9.1f}ms "
                f"{row['index_s'] * 1e3:>7.3f}ms {row['matcher_s'] * 1e3:>9.3f}ms "
                f"{row['preparsed_s'] / row['index_s']:>8.0f}x {row['always']:>7} {row['matches_per_event']:>8.2f}"
            )
    print("identical matches: yes (checked for every event and strategy)")


if __name__ == "__main__":
    main()
