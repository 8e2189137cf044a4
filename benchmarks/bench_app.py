"""The benchmark's dispatcher project: the service with one recording route.

``python -m benchmarks.bench_app serve --port P --no-worker`` runs the
receiver; ``celery -A benchmarks.bench_app:celery_app worker`` runs a worker
whose only route appends ``"<event id> <time.time()>"`` to the file named by
``BENCH_RECORD_FILE``. The upstream peer (``peers/upstream_dispatcher.py``)
runs the same handler, so the benchmark measures both sides the same way.
"""

from __future__ import annotations

import os
import sys
import time

from cloudevents.core.v1.event import CloudEvent

from pacifica.dispatcher import EventHandler, Router
from pacifica.dispatcher.cli import project_entry_points
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.worker import default_router

WORKER_APP = "benchmarks.bench_app:celery_app"
EVENT_TYPE = "org.pacifica.metadata.ingest"
RECORD_ENV = "BENCH_RECORD_FILE"


class RecordingEventHandler(EventHandler):
    """Appends ``"<event id> <time.time()>\\n"`` to ``$BENCH_RECORD_FILE`` (one write per event)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get(RECORD_ENV, "/tmp/bench-handled.txt")

    def handle(self, event: CloudEvent) -> None:
        """Record that this event was handled, and when."""
        with open(self.path, "a", encoding="utf-8") as record:
            record.write(f"{event.get_id()} {time.time()}\n")


def create_router(settings: Settings) -> Router:
    """The built-in routes plus the recording route for the benchmark's event type."""
    router = default_router(settings)
    router.add_route(
        f'$[?(@["eventType"] = "{EVENT_TYPE}" or @["type"] = "{EVENT_TYPE}")]',
        RecordingEventHandler(),
        name="record",
    )
    return router


__getattr__, main = project_entry_points(create_router, WORKER_APP)


if __name__ == "__main__":
    sys.exit(main())
