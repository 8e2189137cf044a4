"""Uploading a consumer's outputs as a new transaction, for the command and for entry points.

The helper module's ``upload()`` runs ``python -m pacifica.dispatcher.consumer.upload DST``
in the command's interpreter with ``{"transaction": {...}, "key_values": {...}}`` on stdin;
the upload goes through ``RemoteUploaderRunner`` with the settings of the environment
(``INGEST_URL``, authentication...), and is recorded in ``PACIFICA_CONSUMER_UPLOAD_RECORD``
so the command knows not to upload ``DST/uploads/`` a second time.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import DispatcherError
from pacifica.dispatcher.models import Transaction, TransactionKeyValue
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner, UploadResult

RECORD_VARIABLE = "PACIFICA_CONSUMER_UPLOAD_RECORD"
# The interpreter the helper module runs this module with (the helper keeps its own copy of
# the name: it runs in the consumer's venv, where this package is not installed).
PYTHON_VARIABLE = "PACIFICA_CONSUMER_PYTHON"
ALIASES = {"proposal": "project"}  # Pacifica's old name, used by the reference example


def transaction_from(attributes: Mapping[str, Any]) -> Transaction:
    """A ``Transaction`` from ``{"Transactions.<field>": value}`` (or bare field names).

    Raises:
        ValueError: a name is not a transaction field.
    """
    values: dict[str, Any] = {}
    for name, value in attributes.items():
        field = name.removeprefix("Transactions.")
        field = ALIASES.get(field, field)
        if field not in Transaction.__dataclass_fields__ or field == "_id":
            raise ValueError(f"{name!r} is not an attribute a new transaction may have")
        values[field] = value
    return Transaction(**values)


def upload_directory(
    settings: Settings,
    directory: str | os.PathLike[str],
    transaction: Transaction,
    key_values: Mapping[str, Any],
) -> UploadResult:
    """Upload every file under ``directory`` as a new transaction and wait for ingest.

    Raises:
        UploadError: ingest refused the bundle or the job failed.
        TransferTimeoutError: the job did not finish in ``TRANSFER_TIMEOUT``.
        ValueError: the transaction metadata is empty or blank.
    """
    pairs = [TransactionKeyValue(key=k, value=v) for k, v in key_values.items()]
    runner = RemoteUploaderRunner.from_settings(settings)
    return runner.upload(
        os.fspath(directory), transaction=transaction, transaction_key_values=pairs
    )


def record_upload(result: UploadResult) -> dict[str, Any]:
    """What an upload produced, as JSON; written to ``PACIFICA_CONSUMER_UPLOAD_RECORD`` if set."""
    shown = {"job_id": result.job_id, "state": result.state}
    record = os.environ.get(RECORD_VARIABLE)
    if record:
        Path(record).write_text(json.dumps(shown), encoding="utf-8")
    return shown


def main(argv: list[str] | None = None) -> int:
    """``python -m pacifica.dispatcher.consumer.upload DST`` with the request on stdin."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m pacifica.dispatcher.consumer.upload DST < request.json",
            file=sys.stderr,
        )
        return 2
    try:
        request = json.load(sys.stdin)
        transaction = transaction_from(request.get("transaction") or {})
        uploads = Path(args[0]) / "uploads"
        result = upload_directory(
            Settings.from_env(), uploads, transaction, request.get("key_values") or {}
        )
    except (DispatcherError, ValueError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(record_upload(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
