#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Event handlers for Pacifica Dispatcher Upper."""
import os
import tempfile

from pacifica.dispatcher.downloader_runners import DownloaderRunner
from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.models import File, Transaction, TransactionKeyValue
from pacifica.dispatcher.uploader_runners import UploaderRunner


class UpperEventHandler(EventHandler):
    """Read each file of the transaction and upload an upper-cased copy."""

    def __init__(self, downloader_runner: DownloaderRunner, uploader_runner: UploaderRunner) -> None:
        """Keep the runners."""
        super(UpperEventHandler, self).__init__()
        self.downloader_runner = downloader_runner
        self.uploader_runner = uploader_runner
        self.last_upload = None

    def handle(self, event) -> None:
        """Handle a CloudEvents notification (a cloudevents.model.Event)."""
        transaction_inst = Transaction.from_cloudevents_model(event)
        transaction_key_value_insts = TransactionKeyValue.from_cloudevents_model(event)
        file_insts = File.from_cloudevents_model(event)

        with tempfile.TemporaryDirectory() as downloader_tempdir_name:
            with tempfile.TemporaryDirectory() as uploader_tempdir_name:
                file_openers = self.downloader_runner.download(downloader_tempdir_name, file_insts)

                for file_inst, file_opener in zip(file_insts, file_openers):
                    new_path = os.path.join(uploader_tempdir_name, file_inst.path)
                    os.makedirs(os.path.dirname(new_path), exist_ok=True)
                    with file_opener() as file:
                        with open(new_path, mode='w') as new_file:
                            new_file.write(file.read().upper())

                new_transaction_inst = Transaction(
                    submitter=transaction_inst.submitter,
                    instrument=transaction_inst.instrument,
                    project=transaction_inst.project,
                )
                new_transaction_key_value_insts = [
                    TransactionKeyValue(key='Transactions._id', value=transaction_inst._id),
                    TransactionKeyValue(key='upper.keys', value=len(transaction_key_value_insts)),
                ]

                (_bundle, job_id, state) = self.uploader_runner.upload(
                    uploader_tempdir_name,
                    transaction=new_transaction_inst,
                    transaction_key_values=new_transaction_key_value_insts,
                )
                self.last_upload = (job_id, state)


__all__ = ('UpperEventHandler', )
