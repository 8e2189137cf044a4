"""Smoke test of the real upstream Pacifica stack harness (tests/pacifica_stack).

Upload a bundle to real ingest, see metadata's ``org.pacifica.metadata.ingest`` CloudEvent arrive,
and get the same bytes back through a real cartd cart; plus the policy gate rejecting a bundle.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.pacifica_stack.plugin import EventSink, event_sink, pacifica_stack  # noqa: F401
from tests.pacifica_stack.stack import (
    PacificaStack,
    build_bundle,
    cart_fileids,
    download_cart,
    upload_bundle,
    wait_for_ingest,
)

pytestmark = pytest.mark.pacifica_stack

INGEST_EVENT = "org.pacifica.metadata.ingest"


def _transaction_id(event: dict[str, Any]) -> Any:
    """Return the ``Transactions._id`` value carried in an ingest CloudEvent's data, if any."""
    for item in event.get("data") or []:
        if isinstance(item, dict) and item.get("destinationTable") == "Transactions._id":
            return item.get("value")
    return None


def test_upload_event_and_cart_roundtrip(
    pacifica_stack: PacificaStack,  # noqa: F811 (fixture imported above)
    event_sink: EventSink,  # noqa: F811
) -> None:
    files = {
        "hello.txt": b"hello pacifica\n",
        "sub/blob.bin": os.urandom(70_000),
    }
    job_id = upload_bundle(pacifica_stack, build_bundle(files, key_values={"run_tag": "smoke"}))

    state = wait_for_ingest(pacifica_stack, job_id, timeout=120)
    assert state["state"] == "OK", state
    assert state["task"] == "ingest metadata", state
    assert float(state["task_percent"]) == 100, state

    event = event_sink.wait_for(
        lambda body: body.get("eventType") == INGEST_EVENT and _transaction_id(body) == job_id,
        timeout=30,
    )
    assert event["cloudEventsVersion"] == "0.1"
    assert event["eventID"] == f"metadata.ingest.{job_id}"
    assert event["source"] == f"http://metadata.pacifica.org/transactions?_id={job_id}"
    file_records = [item for item in event["data"] if item.get("destinationTable") == "Files"]
    assert sorted((rec["subdir"], rec["name"]) for rec in file_records) == [
        ("", "hello.txt"),
        ("sub", "blob.bin"),
    ]
    assert all(isinstance(rec["_id"], int) for rec in file_records)
    run_tag = {"destinationTable": "TransactionKeyValue", "key": "run_tag", "value": "smoke"}
    assert run_tag in event["data"]
    # a plain JSON body (structured CloudEvents 0.1), not application/cloudevents+json
    posted = [req for req in event_sink.requests if req.body is event]
    assert posted[0].headers.get("Content-Type") == "application/json"

    downloaded = download_cart(pacifica_stack, cart_fileids(file_records), timeout=120)
    assert downloaded.keys() == files.keys()
    for path, blob in files.items():
        assert downloaded[path] == blob, path


def test_policy_rejects_unknown_project(pacifica_stack: PacificaStack) -> None:  # noqa: F811
    job_id = upload_bundle(pacifica_stack, build_bundle({"x.txt": b"x\n"}, project="9999"))

    state = wait_for_ingest(pacifica_stack, job_id, timeout=120)
    assert state["state"] == "FAILED", state
    assert state["task"] == "Policy Validation", state
    assert "Precondition Failed" in state["exception"], state
