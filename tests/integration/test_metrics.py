"""``/metrics`` from a real deployment: a uWSGI receiver with two processes and a Celery prefork
worker, PostgreSQL and Redis, PROMETHEUS_MULTIPROC_DIR shared by all of them. After a known
workload every scrape, whichever process answers it, shows the exact counts."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import StubServer, service_required
from tests.integration.conftest import Deployment, event, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def target() -> Iterator[StubServer]:
    server = StubServer(lambda request: request.answer(200)).start()
    yield server
    server.stop()


def samples(text: str) -> dict[str, float]:
    found = re.findall(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, flags=re.M)
    return {name: float(value) for name, value in found}


def test_metrics_add_up_every_process_after_a_known_workload(
    deployments: Callable[..., Deployment], postgres_url: str, redis_url: str, target: StubServer
) -> None:
    uwsgi = shutil.which("uwsgi") or str(Path(sys.executable).with_name("uwsgi"))
    if not Path(uwsgi).exists():
        service_required("uwsgi (pip install uwsgi)")
    deployment = deployments(DATABASE_URL=postgres_url, BROKER_URL=redis_url)
    metrics_dir = deployment.workdir / "metrics"
    metrics_dir.mkdir()
    deployment.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    assert deployment.cli("db", "sync").returncode == 0
    deployment.start_http(
        "uwsgi",
        [
            uwsgi,
            "--http11-socket",
            f"127.0.0.1:{deployment.port}",
            "--master",
            "--lazy-apps",
            "--processes",
            "2",
            "--threads",
            "4",
            "--die-on-term",
            "--need-app",
            "--disable-logging",
            "--module",
            "tests.integration.metrics_wsgi:application",
        ],
    )
    deployment.start_worker(concurrency=2)  # Celery's prefork pool: two child processes
    subscription = {
        "name": "ok events",
        "jsonpath": '$[?(@["type"] = "org.example.ok")]',
        "target_url": f"{target.url}/hook",
    }
    created = requests.post(
        f"{deployment.url}/eventmatch",
        json=subscription,
        headers={"Http-Remote-User": "ops"},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    oks = [event("ok", f"ok-{n}") for n in range(10)]
    fails = [event("fail", f"fail-{n}") for n in range(4)]
    with ThreadPoolExecutor(6) as pool:  # concurrent, so both uWSGI processes take requests
        answers = list(pool.map(deployment.post, [*oks, *fails]))
        again = list(pool.map(deployment.post, oks[:2]))
        bad = list(pool.map(deployment.post, [b"{", b"[]", b"nope"]))
    assert [a.status_code for a in answers] == [202] * 14
    assert [a.status_code for a in again] == [200, 200]
    assert [a.status_code for a in bad] == [400, 400, 400]
    for answer in answers[:10]:
        deployment.wait_status(answer.json(), "200 OK")
    for answer in answers[10:]:
        deployment.wait_status(answer.json(), "500 Internal Server Error")
    wait_for(lambda: len(target.seen("/hook")) == 10, 60, what="10 deliveries")

    def scrape() -> dict[str, float]:
        answer = requests.get(f"{deployment.url}/metrics", timeout=10)
        assert answer.status_code == 200
        return samples(answer.text)

    delivered = 'dispatcher_delivery_attempts_total{outcome="delivered"}'
    wait_for(lambda: scrape().get(delivered) == 10, 30, what="the delivered count")
    expected = {
        'dispatcher_events_received_total{outcome="accepted"}': 14,
        'dispatcher_events_received_total{outcome="duplicate"}': 2,
        'dispatcher_events_received_total{outcome="invalid"}': 3,
        'dispatcher_events_finished_total{status="200"}': 10,
        'dispatcher_events_finished_total{status="500"}': 4,
        'dispatcher_route_runs_total{route="ok",status="200"}': 10,
        'dispatcher_route_runs_total{route="fail",status="500"}': 4,
        'dispatcher_route_run_seconds_count{route="ok",status="200"}': 10,
        delivered: 10,
        "dispatcher_events_waiting": 0,
        "dispatcher_events_processing": 0,
        "dispatcher_oldest_waiting_event_seconds": 0,
    }
    for _ in range(6):  # whichever uWSGI process answers
        found = scrape()
        assert {name: found.get(name) for name in expected} == expected
    writers = {path.stem.split("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
    assert len(writers) >= 3, writers  # receiver and worker processes all wrote counters
