"""CPU per event of the core, in process: storing events (as the receiver's intake does, ten
per commit) and processing them (as the worker's task body does, twenty per message, or
``--per-message`` N).

No broker, server or worker: this isolates the project's own code from Celery and the
machine's other load (process CPU time, not wall time). Run it from two checkouts to
compare versions side by side:

    .venv/bin/python -m benchmarks.bench_core [--events 4000] [--rounds 3] [--per-message 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from pacifica.dispatcher import NoopEventHandler, Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage import open_database, sync_schema
from pacifica.dispatcher.testing import event_from_dict


def measure(events: int, per_message: int = 20) -> dict[str, float]:
    """Milliseconds of CPU per event to accept, and to process, ``events`` events on SQLite."""
    with tempfile.TemporaryDirectory() as scratch:
        database = open_database(f"sqlite:///{scratch}/core.sqlite3")
        sync_schema(database)
        router = Router()
        router.add_route('$[?(@["type"] = "bench")]', NoopEventHandler(), name="noop")
        received = [
            event_from_dict(
                {
                    "specversion": "1.0",
                    "id": f"e{i}",
                    "type": "bench",
                    "source": "/s",
                    "data": {"n": i},
                }
            )
            for i in range(events)
        ]
        started = time.process_time()
        ids: list[str] = []
        for start in range(0, events, 10):
            ids += [a.uuid for a in dispatch.accept(received[start : start + 10])]
        accepted = time.process_time()
        for start in range(0, events, per_message):
            done = dispatch.process_many(ids[start : start + per_message], router)
            assert all(s.http == "200 OK" for s in done.statuses.values()), done
        processed = time.process_time()
        database.close()
    return {
        "accept_ms_per_event": 1000 * (accepted - started) / events,
        "process_ms_per_event": 1000 * (processed - accepted) / events,
    }


def main() -> None:
    """Print one JSON line per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-message", type=int, default=20, help="events per message [20]")
    args = parser.parse_args()
    for _ in range(args.rounds):
        measured = measure(args.events, args.per_message)
        print(json.dumps({k: round(v, 4) for k, v in measured.items()}))


if __name__ == "__main__":
    main()
