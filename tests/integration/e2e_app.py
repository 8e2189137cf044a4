"""The dispatcher project of the end-to-end test: the README's upper-casing handler, for real.

``python -m tests.integration.e2e_app serve`` runs the receiver (and, on the embedded default,
a worker of this app) with one route: every ``org.pacifica.metadata.ingest`` event of a
transaction that is not itself a derived one gets its files downloaded through cartd
(``CARTD_URL``), upper-cased, and uploaded through ingest (``INGEST_URL``) as a new transaction
that points back to the original with the key/value ``Transactions._id``.
"""

from __future__ import annotations

import os
import sys
import tempfile

from cloudevents.core.v1.event import CloudEvent

from pacifica.dispatcher import EventHandler, File, Router, Transaction, TransactionKeyValue
from pacifica.dispatcher.cli import project_entry_points
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.downloader_runners import DownloaderRunner, RemoteDownloaderRunner
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner, UploaderRunner

WORKER_APP = "tests.integration.e2e_app:celery_app"
ROUTE_NAME = "upper"
PROVENANCE_KEY = "Transactions._id"

#: Ingest events, except those of transactions that already carry provenance: the handler's own
#: uploads produce ingest events too, and matching them would loop forever.
INGEST_NOT_DERIVED = (
    '$[?(@["eventType"] = "org.pacifica.metadata.ingest" and not'
    ' @["data"][*][?(@["destinationTable"] = "TransactionKeyValue"'
    f' and @["key"] = "{PROVENANCE_KEY}")])]'
)


class UpperEventHandler(EventHandler):
    """Upload an upper-cased copy of every file of the transaction."""

    def __init__(self, downloader: DownloaderRunner, uploader: UploaderRunner) -> None:
        self.downloader = downloader
        self.uploader = uploader

    def handle(self, event: CloudEvent) -> None:
        """Download, upper-case (subdirectories kept), upload with ``Transactions._id``."""
        source = Transaction.from_event(event)
        files = File.from_event(event)
        with tempfile.TemporaryDirectory() as down, tempfile.TemporaryDirectory() as up:
            for file, opener in zip(files, self.downloader.download(down, files), strict=True):
                target = os.path.join(up, *file.path.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with opener("rb") as src, open(target, "wb") as dst:
                    dst.write(src.read().upper())
            self.uploader.upload(
                up,
                transaction=Transaction(
                    submitter=source.submitter,
                    project=source.project,
                    instrument=source.instrument,
                ),
                transaction_key_values=[TransactionKeyValue(key=PROVENANCE_KEY, value=source._id)],
            )


def create_router(settings: Settings) -> Router:
    """One route: original ingests go to the upper-casing handler; nothing else matches."""
    router = Router()
    router.add_route(
        INGEST_NOT_DERIVED,
        UpperEventHandler(
            RemoteDownloaderRunner.from_settings(settings),
            RemoteUploaderRunner.from_settings(settings),
        ),
        name=ROUTE_NAME,
    )
    return router


__getattr__, main = project_entry_points(create_router, WORKER_APP)


if __name__ == "__main__":
    sys.exit(main())
