"""The module consumer.zip entry points import: ``download`` and ``upload``, returning promises.

``start-pacifica-notifications-consumer`` copies this file into the
consumer's virtual environment (it is not on the package index) and
installs ``promise`` beside it, so the Consumer Expectations example runs as
written::

    download(SRC).then(lambda notification: ... upload(DST, attributes, key_values))

It needs only the standard library and ``promise``; the upload itself runs in
the command's own interpreter (``PACIFICA_CONSUMER_PYTHON``, which has
pacifica-dispatcher and the cartd/ingest settings in its environment).

A rejected promise that nothing handled (an exception in a ``.then``
callback, a failed upload) makes the entry point exit 1 with the error on
stderr: the example never looks at rejections, and its run must not be
recorded as a success when its upload failed.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import traceback
from typing import Any

from promise import Promise

PYTHON_VARIABLE = "PACIFICA_CONSUMER_PYTHON"
UPLOAD_MODULE = "pacifica.dispatcher.consumer.upload"
_tracked: list[TrackedPromise] = []


class TrackedPromise(Promise[Any]):
    """A promise whose unhandled rejection fails the entry point at exit (so do the promises
    chained from it: ``then`` builds them from the same class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chained = False
        _tracked.append(self)

    def _then(self, *args: Any, **kwargs: Any) -> Any:
        self.chained = True
        return super()._then(*args, **kwargs)


def _fail_on_unhandled_rejection() -> None:
    """At exit: print every rejection nothing chained on, and exit 1 if there was one."""
    unhandled = [p for p in _tracked if p.is_rejected and not p.chained]
    for promise in unhandled:
        reason = promise.reason
        lines = traceback.format_exception(type(reason), reason, reason.__traceback__)
        print("unhandled promise rejection:\n" + "".join(lines), file=sys.stderr, end="")
    if unhandled:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


atexit.register(_fail_on_unhandled_rejection)


def with_proposal_alias(notification: dict[str, Any]) -> dict[str, Any]:
    """The notification with a ``Transactions.proposal`` record mirroring ``Transactions.project``.

    Pacifica renamed proposal to project; the reference example still looks
    up ``Transactions.proposal``, which real Metadata events do not carry.
    """
    data = notification.get("data")
    if not isinstance(data, list):
        return notification
    tables = {r.get("destinationTable") for r in data if isinstance(r, dict)}
    if "Transactions.proposal" in tables or "Transactions.project" not in tables:
        return notification
    project = next(r for r in data if r.get("destinationTable") == "Transactions.project")
    alias = {**project, "destinationTable": "Transactions.proposal"}
    return {**notification, "data": [*data, alias]}


def download(src: str) -> TrackedPromise:
    """A promise of the notification once ``SRC/downloads/`` holds the transaction's files.

    The command downloads (hash-checked) before the entry point starts, so the
    promise is settled at once: with the notification (``SRC/notification.json``),
    or rejected when SRC is not a prepared directory.
    """

    def executor(resolve: Any, reject: Any) -> None:
        try:
            with open(os.path.join(src, "notification.json"), encoding="utf-8") as handle:
                notification = json.load(handle)
            if not os.path.isdir(os.path.join(src, "downloads")):
                raise FileNotFoundError(f"{src}/downloads is missing")
        except (OSError, ValueError) as exc:
            reject(exc)
            return
        resolve(with_proposal_alias(notification))

    return TrackedPromise(executor)


def upload(
    dst: str, attributes: dict[str, Any], key_values: dict[str, Any] | None = None
) -> TrackedPromise:
    """A promise that ``DST/uploads/`` became a new transaction and ingest finished with it.

    ``attributes`` are ``Transactions.<field>`` values (``Transactions.proposal``
    is taken as the project), ``key_values`` the new transaction's key/values.
    Resolves with ``{"job_id": N, "state": {...}}`` (ingest's job id is the new
    transaction's id); rejects with ingest's error. The command does not upload
    ``DST/uploads/`` again after the entry point exits.
    """

    def executor(resolve: Any, reject: Any) -> None:
        python = os.environ.get(PYTHON_VARIABLE)
        if not python:
            reject(RuntimeError(f"{PYTHON_VARIABLE} is not set: run under the consumer command"))
            return
        request = json.dumps({"transaction": attributes, "key_values": key_values or {}})
        done = subprocess.run(
            [python, "-m", UPLOAD_MODULE, dst],
            input=request,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            reject(RuntimeError(f"upload failed: {done.stderr.strip() or done.returncode}"))
            return
        resolve(json.loads(done.stdout))

    return TrackedPromise(executor)
