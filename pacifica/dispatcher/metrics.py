"""Prometheus metrics (prometheus-client lives here only): counters the processes update, and
the scrape that adds the database's gauges.

Counters are per process. Under uWSGI with several processes and Celery's
prefork pool, set ``PROMETHEUS_MULTIPROC_DIR`` to a directory shared by every
process of the machine (emptied when the deployment starts) before they
start: prometheus-client then keeps each process's values in a file there,
and ``/metrics`` adds them up. Without it, ``/metrics`` shows the serving
process's own counters only. The queue gauges are read from the database at
scrape time, so they are right whatever answers the scrape.

Nothing is created at import time: the instruments are built on first use,
after the environment is settled.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


@dataclass(frozen=True)
class QueueGauges:
    """What the database says at scrape time: events waiting, processing, the oldest wait."""

    waiting: int
    processing: int
    oldest_waiting_seconds: float


@dataclass(frozen=True)
class Instruments:
    """The process's counters and histogram."""

    received: Any
    finished: Any
    route_runs: Any
    route_seconds: Any
    delivery_attempts: Any


_CREATING = threading.Lock()


def instruments() -> Instruments:
    """The instruments, created once per process (in multiprocess mode, backed by files)."""
    if _instruments.cache_info().currsize:
        return _instruments()
    with _CREATING:  # request threads race to the first use
        return _instruments()


@cache
def _instruments() -> Instruments:
    from prometheus_client import Counter, Histogram, values

    if os.environ.get(MULTIPROC_ENV):
        # Files named by host and pid: containers sharing the directory never collide.
        host = socket.gethostname().replace("_", "-")
        values.ValueClass = values.MultiProcessValue(lambda: f"{host}-{os.getpid()}")  # type: ignore[no-untyped-call]
    return Instruments(
        received=Counter(
            "dispatcher_events_received",
            "Events POSTed to /receive, by outcome (accepted, duplicate, invalid, unavailable, error).",
            ["outcome"],
        ),
        finished=Counter(
            "dispatcher_events_finished",
            "Events that reached a final status (200, 422, 500), by status.",
            ["status"],
        ),
        route_runs=Counter(
            "dispatcher_route_runs",
            "Route runs, by route and status (200, 500).",
            ["route", "status"],
        ),
        route_seconds=Histogram(
            "dispatcher_route_run_seconds",
            "Duration of route runs, by route and status.",
            ["route", "status"],
            buckets=DURATION_BUCKETS,
        ),
        delivery_attempts=Counter(
            "dispatcher_delivery_attempts",
            "Webhook delivery attempts, by outcome (delivered, retry, dead, failed, refused, cancelled).",
            ["outcome"],
        ),
    )


def count_received(outcome: str, events: int = 1) -> None:
    """Count events (or a refused request) at ``/receive``."""
    instruments().received.labels(outcome).inc(events)


def count_finished(statuses: Mapping[int, int]) -> None:
    """Count events that reached a final status: ``{status code: how many}``."""
    finished = instruments().finished
    for status, count in statuses.items():
        if count:
            finished.labels(str(status)).inc(count)


def observe_route_runs(runs: Iterable[tuple[str, int, datetime, datetime | None]]) -> None:
    """Count route runs and their durations: ``(route, status, started, finished)`` each."""
    tools = instruments()
    for route, status, started, finished in runs:
        tools.route_runs.labels(route, str(status)).inc()
        if finished is not None:
            seconds = max((finished - started).total_seconds(), 0.0)
            tools.route_seconds.labels(route, str(status)).observe(seconds)


def count_delivery_attempt(outcome: str) -> None:
    """Count one delivery attempt by what it decided."""
    instruments().delivery_attempts.labels(outcome).inc()


def exposition(queue: Callable[[], QueueGauges]) -> bytes:
    """The Prometheus text exposition: every process's counters plus the queue gauges now."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    instruments()  # the families appear (at zero) before anything happened
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        counters = generate_latest(registry)
    else:
        counters = generate_latest(REGISTRY)
    gauges = CollectorRegistry(auto_describe=False)
    gauges.register(QueueCollector(queue()))
    return counters + generate_latest(gauges)


class QueueCollector:
    """The database's gauges, read once for one scrape."""

    def __init__(self, now: QueueGauges) -> None:
        self.now = now

    def collect(self) -> Iterator[Any]:
        """The three gauges (prometheus-client's collector protocol)."""
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "dispatcher_events_waiting",
            "Events stored and waiting (202 Accepted).",
            self.now.waiting,
        )
        yield GaugeMetricFamily(
            "dispatcher_events_processing",
            "Events being processed (102 Processing).",
            self.now.processing,
        )
        yield GaugeMetricFamily(
            "dispatcher_oldest_waiting_event_seconds",
            "Age of the oldest waiting event, seconds (0 when none waits).",
            self.now.oldest_waiting_seconds,
        )
