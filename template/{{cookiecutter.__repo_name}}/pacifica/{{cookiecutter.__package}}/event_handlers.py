"""The event handlers of {{ cookiecutter.__repo_name }}: the work its routes run."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from pacifica.dispatcher import EventHandler, File, Transaction, TransactionKeyValue
from pacifica.dispatcher.downloader_runners import DownloaderRunner, Opener, relative_path
from pacifica.dispatcher.uploader_runners import UploaderRunner

if TYPE_CHECKING:
    from cloudevents.core.v1.event import CloudEvent

# The key-value that links an uploaded transaction to the transaction it was made from.
PROVENANCE_KEY = "Transactions._id"
_CHUNK = 1 << 20


class {{ cookiecutter.__handler_class }}(EventHandler):
    """Uploads an upper-cased copy of a transaction's files as a new, linked transaction.

    Replace the body of ``process`` with your own work: it gets the downloaded
    files and a directory whose whole content is uploaded afterwards.
    """

    def __init__(
        self,
        downloader_runner: DownloaderRunner,
        uploader_runner: UploaderRunner,
    ) -> None:
        self.downloader_runner = downloader_runner
        self.uploader_runner = uploader_runner

    def handle(self, event: CloudEvent) -> None:
        """Download the event's files, process them, upload the result.

        Raises:
            ValueError: the event names no transaction id, or no files.
            DownloadError: a file cannot be downloaded or fails its checksum.
            UploadError: ingest refused the new transaction.
        """
        transaction = Transaction.from_event(event)
        if transaction._id is None:
            raise ValueError("the event has no Transactions._id to link the upload to")
        files = File.from_event(event)
        with (
            tempfile.TemporaryDirectory() as download_dir,
            tempfile.TemporaryDirectory() as upload_dir,
        ):
            openers = self.downloader_runner.download(download_dir, files)
            self.process(files, openers, upload_dir)
            self.uploader_runner.upload(
                upload_dir,
                transaction=Transaction(
                    submitter=transaction.submitter,
                    instrument=transaction.instrument,
                    project=transaction.project,
                ),
                transaction_key_values=[
                    TransactionKeyValue(key=PROVENANCE_KEY, value=transaction._id),
                ],
            )

    def process(self, files: list[File], openers: list[Opener], upload_dir: str) -> None:
        """Write an upper-cased copy of every file to ``upload_dir``, at the same path."""
        for file, opener in zip(files, openers, strict=True):
            target = os.path.join(upload_dir, *relative_path(file).split("/"))
            write_upper_case_copy(opener, target)


def write_upper_case_copy(opener: Opener, target: str) -> None:
    """Copy a file to ``target`` with ASCII letters upper-cased; other bytes are kept as they are."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with opener("rb") as source, open(target, "wb") as sink:
        while chunk := source.read(_CHUNK):
            sink.write(chunk.upper())
