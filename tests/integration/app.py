"""A dispatcher project for the integration tests: the service with test routes.

``python -m tests.integration.app serve`` runs the receiver (and, on the
embedded default, a worker of this app); ``celery -A
tests.integration.app:celery_app worker`` runs a worker with these routes.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from pacifica.dispatcher import EventHandler, ExceptionEventHandler, NoopEventHandler, Router
from pacifica.dispatcher.cli import project_entry_points
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.worker import default_router

WORKER_APP = "tests.integration.app:celery_app"


def type_is(name: str) -> str:
    """A JSONPath matching events of this type, in 1.0 or 0.1 form."""
    return f'$[?(@["type"] = "{name}" or @["eventType"] = "{name}")]'


class SlowEventHandler(EventHandler):
    """Blocks until a release file appears, leaving traces a test can watch.

    The event's data names a directory: the handler appends its pid to
    ``started``, waits for ``release`` (or ``seconds``, when the data gives
    them: a handler that simply takes that long), then appends to ``done``.
    """

    def handle(self, event: CloudEvent) -> None:
        data: Any = event.get_data()
        folder = Path(data["dir"])
        with (folder / "started").open("a", encoding="utf-8") as started:
            started.write(f"{os.getpid()}\n")
        now = time.monotonic()
        deadline = now + float(data.get("timeout", 120))
        finish = now + float(data["seconds"]) if "seconds" in data else None
        while not (folder / "release").exists():
            if finish is not None and time.monotonic() >= finish:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("release file never appeared")
            time.sleep(0.05)
        with (folder / "done").open("a", encoding="utf-8") as done:
            done.write(f"{event.get_id()}\n")


class FlakyEventHandler(EventHandler):
    """Fails until fixed, leaving one line per run a test can count.

    The event's data names a directory: each run appends ``<event id> <time>``
    to ``runs`` (the side effect), then raises while ``fixed`` is absent and
    the data says ``fail``.
    """

    def handle(self, event: CloudEvent) -> None:
        data: Any = event.get_data()
        folder = Path(data["dir"])
        with (folder / "runs").open("a", encoding="utf-8") as runs:
            runs.write(f"{event.get_id()} {time.time()}\n")
        if data.get("fail") and not (folder / "fixed").exists():
            raise RuntimeError("not fixed yet")


def create_router(settings: Settings) -> Router:
    """The built-in routes plus one route per test behaviour."""
    router = default_router(settings)
    router.add_route(type_is("org.example.ok"), NoopEventHandler(), name="ok")
    router.add_route(type_is("org.example.fail"), ExceptionEventHandler(), name="fail")
    router.add_route(type_is("org.example.fanout"), NoopEventHandler(), name="fanout-ok")
    router.add_route(type_is("org.example.fanout"), ExceptionEventHandler(), name="fanout-fail")
    router.add_route(type_is("org.example.slow"), SlowEventHandler(), name="slow")
    router.add_route(type_is("org.example.flaky"), FlakyEventHandler(), name="flaky")
    return router


__getattr__, main = project_entry_points(create_router, WORKER_APP)


if __name__ == "__main__":
    sys.exit(main())
