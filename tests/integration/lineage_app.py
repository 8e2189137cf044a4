"""The dispatcher project of the two-hop lineage test: original -> hop 1 -> hop 2, for real.

``python -m tests.integration.lineage_app serve``: an original ingest (no ``Transactions._id``
key/value) goes to route ``first``, whose handler uploads a small derived transaction tagged
``hop`` = ``1``; that upload's ingest event goes to route ``second``, which uploads one tagged
``hop`` = ``2``; nothing matches that one, so the chain stops after two hops.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from cloudevents.core.v1.event import CloudEvent

from pacifica.dispatcher import EventHandler, Router, Transaction, TransactionKeyValue
from pacifica.dispatcher.cli import project_entry_points
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner, UploaderRunner
from tests.integration.e2e_app import INGEST_NOT_DERIVED, PROVENANCE_KEY

WORKER_APP = "tests.integration.lineage_app:celery_app"
HOP_ONE = (
    '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]["data"][*][?(@["destinationTable"]'
    ' = "TransactionKeyValue" and @["key"] = "hop" and @["value"] = "1")]'
)


class DeriveEventHandler(EventHandler):
    """Upload one small file as a new transaction pointing back to the event's, tagged ``hop``."""

    def __init__(self, uploader: UploaderRunner, hop: str) -> None:
        self.uploader = uploader
        self.hop = hop

    def handle(self, event: CloudEvent) -> None:
        """Upload ``derived.txt`` with ``Transactions._id`` = the event's transaction."""
        source = Transaction.from_event(event)
        with tempfile.TemporaryDirectory() as up:
            Path(up, "derived.txt").write_text(f"hop {self.hop} from {source._id}\n")
            self.uploader.upload(
                up,
                transaction=Transaction(
                    submitter=source.submitter, project=source.project, instrument=source.instrument
                ),
                transaction_key_values=[
                    TransactionKeyValue(key=PROVENANCE_KEY, value=source._id),
                    TransactionKeyValue(key="hop", value=self.hop),
                ],
            )


def create_router(settings: Settings) -> Router:
    """Two routes, one per hop."""
    uploader = RemoteUploaderRunner.from_settings(settings)
    router = Router()
    router.add_route(INGEST_NOT_DERIVED, DeriveEventHandler(uploader, "1"), name="first")
    router.add_route(HOP_ONE, DeriveEventHandler(uploader, "2"), name="second")
    return router


__getattr__, main = project_entry_points(create_router, WORKER_APP)


if __name__ == "__main__":
    sys.exit(main())
