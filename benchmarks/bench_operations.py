"""The operator page and /metrics on a large PostgreSQL database (issue 15).

    TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python -m benchmarks.bench_operations [--events 1000000]

Fills a fresh database with ``--events`` events over 30 days (one route run
each, a failing second route on 2 %, 200 waiting), 20 subscriptions and
100,000 deliveries in every state, then times ``GET /ui/`` (as an admin and
as a user), ``GET /ui/event?q=`` and ``GET /metrics`` in process (median of
10), and the receiver's ``POST /receive`` throughput with and without a
scrape every second. Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service.intake import Intake
from pacifica.dispatcher.service.outbox import event_outbox
from pacifica.dispatcher.service.web import create_app, operator_mounts
from pacifica.dispatcher.storage import open_database, sync_schema
from tests.conftest import WSGIClient

FILL = """
INSERT INTO dispatcher_event (uuid, event_id, source, event_type, spec_version, document, status,
    attempts, created, updated, finished, transaction_id)
SELECT md5(i::text)::uuid, 'e' || i, '/bench', 'org.pacifica.metadata.ingest', '1.0', '{"data": []}',
    CASE WHEN i > %(n)s - 200 THEN 202 WHEN i %% 50 = 0 THEN 500 WHEN i %% 17 = 0 THEN 422 ELSE 200 END,
    1, t, t, CASE WHEN i > %(n)s - 200 THEN NULL ELSE t + interval '1 ms' * (i %% 3000) END, i::text
FROM (SELECT i, (now() AT TIME ZONE 'utc') - interval '30 days' * ((%(n)s - i)::float / %(n)s) AS t
      FROM generate_series(1, %(n)s) i) AS s;
INSERT INTO dispatcher_route_run (event_id, route, handler, status, attempts, started, finished,
    created, updated, exc_type, exc_message)
SELECT uuid, 'index', 'bench.Index', 200, 1, created, finished, created, created, NULL, NULL
FROM dispatcher_event WHERE status IN (200, 500);
INSERT INTO dispatcher_route_run (event_id, route, handler, status, attempts, started, finished,
    created, updated, exc_type, exc_message)
SELECT uuid, 'archive', 'bench.Archive', 500, 1, created, finished, created, created,
    'ConnectionError', 'archive refused the connection'
FROM dispatcher_event WHERE status = 500;
INSERT INTO dispatcher_subscription (uuid, name, jsonpath, "user", target_url, version, extensions,
    auth, failures, created, updated)
SELECT md5('s' || j)::uuid, 'hook ' || j, '$', 'user' || (j %% 5), 'https://example.org/' || j,
    'v0.1', '{}', '{}', 0, now(), now()
FROM generate_series(1, 20) j;
INSERT INTO dispatcher_delivery (uuid, event_id, subscription_id, status, attempts, budget_start,
    created, updated, error)
SELECT md5('d' || k)::uuid, md5((%(n)s - (k / 20))::text)::uuid, md5('s' || (k %% 20 + 1))::uuid,
    CASE WHEN k %% 97 = 0 THEN 410 WHEN k %% 89 = 0 THEN 0 WHEN k %% 83 = 0 THEN 403 ELSE 200 END,
    CASE WHEN k %% 89 = 0 THEN 2 ELSE 1 END, now(), now(), now(),
    CASE WHEN k %% 97 = 0 THEN '503 from target' ELSE NULL END
FROM generate_series(0, 99999) k;
ANALYZE;
"""


def median_ms(call: Callable[[], Any], runs: int = 10) -> float:
    call()  # warm: connection, compiled statements
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def receive_rate(client: WSGIClient, intake: Intake, seconds: float) -> float:
    """Events per second one thread gets accepted by POST /receive for ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        body = {
            "specversion": "1.0",
            "id": uuidlib.uuid4().hex,
            "type": "t",
            "source": "/b",
            "data": [1],
        }
        assert client.post("/receive", body).status == 202
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    admin_url = os.environ["TEST_POSTGRES_URL"]
    name = f"bench_ops_{os.getpid()}"
    admin = open_database(admin_url)
    admin.execute_sql(f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        database = open_database(url)
        sync_schema(database)
        start = time.perf_counter()
        with database.atomic():
            database.execute_sql(FILL.replace("ANALYZE;", ""), {"n": args.events})
        database.execute_sql("ANALYZE")
        print(f"filled {args.events:,} events in {time.perf_counter() - start:.0f} s")
        settings = Settings.from_env({"DATABASE_URL": url, "ADMIN_USERS": "root"})
        intake = Intake(event_outbox(lambda ids, delay: ids, lease=3600).send)
        mounts = operator_mounts(settings, ["index", "archive"], lambda ids: None, None)
        client = WSGIClient(create_app(settings, intake.submit, mounts), check_openapi=False)
        root, user = {"Http-Remote-User": "root"}, {"Http-Remote-User": "user1"}
        results = {
            "GET /ui/ (admin)": median_ms(lambda: client.get("/ui/", headers=root)),
            "GET /ui/ (user)": median_ms(lambda: client.get("/ui/", headers=user)),
            "GET /ui/event?q=<transaction id>": median_ms(
                lambda: client.get(f"/ui/event?q={args.events // 2}", headers=root)
            ),
            "GET /metrics": median_ms(lambda: client.get("/metrics")),
        }
        assert client.get("/ui/", headers=root).status == 200
        quiet = receive_rate(client, intake, 10)
        stop = threading.Event()

        def scrape() -> None:
            while not stop.wait(1.0):
                assert client.get("/metrics").status == 200

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        scraped = receive_rate(client, intake, 10)
        stop.set()
        scraper.join()
        intake.drain()
        results["POST /receive events/s (1 thread)"] = quiet
        results["POST /receive events/s while /metrics is scraped every second"] = scraped
        print(json.dumps({k: round(v, 1) for k, v in results.items()}, indent=2))
    finally:
        open_database(url).close()
        from pacifica.dispatcher.storage import forget_connection

        forget_connection()
        admin.execute_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
