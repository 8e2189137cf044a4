"""The upstream peer: pacifica-dispatcher 0.2.5 wired as its example project does.

Runs only in the upstream's own venv (its ``cloudevents`` package is the old
cloudevents-python 0.2.1, which clashes with the CNCF SDK this project uses).
Modelled on UPSTREAM-NOTES.md section 9.3 ``peer_dispatcher.py``; the handler
is the benchmark's recording handler (same idea as ``benchmarks/bench_app.py``).

    python upstream_dispatcher.py PORT                     # CherryPy receiver
    celery -A upstream_dispatcher:celery_app worker ...    # worker (cwd = this folder)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import cherrypy
import playhouse.db_url
from jsonpath2.path import Path

from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.receiver import create_peewee_model
from pacifica.dispatcher.router import Router

EVENT_TYPE = "org.pacifica.metadata.ingest"
RECORD_FILE = os.environ.get("BENCH_RECORD_FILE", "/tmp/bench-handled.txt")


class RecordingEventHandler(EventHandler):  # type: ignore[misc]
    """Appends ``"<eventID> <time.time()>\\n"`` to ``$BENCH_RECORD_FILE``."""

    def handle(self, event: Any) -> None:
        """Record that this ``cloudevents.model.Event`` was handled, and when."""
        with open(RECORD_FILE, "a", encoding="utf-8") as record:
            record.write(f"{event.event_id} {time.time()}\n")


db = playhouse.db_url.connect(os.environ.get("DATABASE_URL", "sqlite:///db.sqlite3"))
ReceiveTaskModel = create_peewee_model(db)
ReceiveTaskModel.create_table(safe=True)
router = Router()
router.add_route(Path.parse_str(f'$[?(@["eventType"] = "{EVENT_TYPE}")]'), RecordingEventHandler())
celery_app = ReceiveTaskModel.create_celery_app(
    router,
    "peer.app",
    "peer.tasks.receive",
    backend=os.environ.get("BACKEND_URL", "rpc://"),
    broker=os.environ.get("BROKER_URL", "redis://127.0.0.1:16379/0"),
)
application = ReceiveTaskModel.create_cherrypy_app(celery_app.tasks["peer.tasks.receive"])

if __name__ == "__main__":
    cherrypy.config.update(
        {
            "server.socket_host": "127.0.0.1",
            "server.socket_port": int(sys.argv[1]) if len(sys.argv) > 1 else 18069,
            "engine.autoreload.on": False,
            "log.screen": False,
        }
    )
    cherrypy.tree.mount(application)
    cherrypy.engine.start()
    cherrypy.engine.block()
