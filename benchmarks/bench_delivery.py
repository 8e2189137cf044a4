"""Deliveries per second to a local target, through the real delivery code and a SQLite log.

Usage: ``.venv/bin/python -m benchmarks.bench_delivery [--deliveries 2000] [--signed]``

One process makes every attempt in turn, as one worker process does: lease the
delivery, POST the event (with basic auth, optionally signed) to a
ThreadingHTTPServer on 127.0.0.1, log the attempt, mark it delivered. This
is the per-worker-process rate; a deployment runs WORKER_CONCURRENCY of them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage import (
    DeliveryStatus,
    deliveries,
    open_database,
    sync_schema,
)
from pacifica.dispatcher.storage.schema import Delivery
from pacifica.dispatcher.subscriptions import delivery, registry
from pacifica.dispatcher.testing import event_from_dict

EVENT_FILE = Path(__file__).parent.parent / "tests" / "test_files" / "metadata_ingest_event.json"


class Target(BaseHTTPRequestHandler):
    """Reads the body and answers 200."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        del args


def prepare(count: int, url: str, signed: bool) -> list[int]:
    sub = registry.create(
        "bench",
        {
            "name": "bench",
            "jsonpath": "$",
            "target_url": url,
            "auth": {"type": "basic", "basic": {"username": "u", "password": "p"}},
            "secret": signed or None,
        },
    )
    base = json.loads(EVENT_FILE.read_text(encoding="utf-8"))
    docs = [event_from_dict({**base, "eventID": f"bench-{n}"}) for n in range(count)]
    ids = []
    for accepted in dispatch.accept(docs):
        ids += deliveries.record_matches(uuid.UUID(accepted.uuid), [sub["uuid"]])
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--signed", action="store_true", help="sign every delivery")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with tempfile.TemporaryDirectory() as workdir:
        database = open_database(f"sqlite:///{workdir}/bench.sqlite3")
        sync_schema(database)
        ids = prepare(args.deliveries, url, args.signed)
        settings = Settings.from_env({"DISPATCHER_DATA_DIR": workdir})
        session = delivery.new_session()
        started = time.perf_counter()
        for delivery_id in ids:
            delivery.attempt(delivery_id, settings, session)
        elapsed = time.perf_counter() - started
        done = Delivery.select().where(Delivery.status == int(DeliveryStatus.DELIVERED)).count()
    server.shutdown()
    assert done == len(ids), f"only {done} of {len(ids)} delivered"
    print(
        f"{len(ids)} deliveries ({'signed' if args.signed else 'unsigned'}) in {elapsed:.2f} s: "
        f"{len(ids) / elapsed:.0f} deliveries/s per worker process, "
        f"{elapsed / len(ids) * 1e3:.2f} ms each"
    )


if __name__ == "__main__":
    main()
