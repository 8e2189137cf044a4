"""The project's runners against the real upstream Pacifica stack (tests/pacifica_stack).

``RemoteUploaderRunner`` bundles a directory and pushes it through real ingest (policy gate,
archive, metadata); ``RemoteDownloaderRunner`` gets the ingested files back through a real
cartd cart. The CloudEvent metadata emits for each ingest tells which file ids to fetch.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import requests

from pacifica.dispatcher.downloader_runners import Opener, RemoteDownloaderRunner
from pacifica.dispatcher.errors import DownloadError, UploadError
from pacifica.dispatcher.models import File, Transaction, TransactionKeyValue
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner, UploadResult
from tests.pacifica_stack.plugin import EventSink, event_sink, pacifica_stack  # noqa: F401
from tests.pacifica_stack.stack import INSTRUMENT, PROJECT, SUBMITTER, PacificaStack

pytestmark = [pytest.mark.integration, pytest.mark.pacifica_stack]

INGEST_EVENT = "org.pacifica.metadata.ingest"
#: Generous: two cores, and other test suites run beside this one.
SERVICE_TIMEOUT = 120.0

TEXT = "hello.txt"
BINARY = "blob.bin"
NON_ASCII = "données/été/naïve ☃.txt"


def make_tree(root: Path) -> dict[str, bytes]:
    """Write a text file, random binary bytes and a non-ASCII name two levels down."""
    files = {
        TEXT: b"hello pacifica\nsecond line\n",
        BINARY: os.urandom(300_000) + b"\r\n\x00\xff",
        NON_ASCII: "grüße, ☃ & ünïcödé\n".encode(),
    }
    for relpath, blob in files.items():
        target = root.joinpath(*relpath.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    return files


def transaction(project: str = PROJECT) -> Transaction:
    """A new transaction the fixtures of the stack let through the policy gate."""
    return Transaction(submitter=SUBMITTER, project=project, instrument=INSTRUMENT)


def transaction_id(event: dict[str, Any]) -> Any:
    """The ``Transactions._id`` an ingest CloudEvent carries, if any."""
    for item in event.get("data") or []:
        if isinstance(item, dict) and item.get("destinationTable") == "Transactions._id":
            return item.get("value")
    return None


def upload(stack: PacificaStack, sink: EventSink, tree: Path, tag: str) -> tuple[UploadResult, Any]:
    """Upload ``tree`` with a ``run_tag`` key/value; return the result and metadata's event."""
    result = RemoteUploaderRunner(stack.ingest_url).upload(
        str(tree),
        transaction=transaction(),
        transaction_key_values=[TransactionKeyValue(key="run_tag", value=tag)],
        timeout=SERVICE_TIMEOUT,
    )
    event = sink.wait_for(
        lambda body: (
            body.get("eventType") == INGEST_EVENT and transaction_id(body) == result.job_id
        ),
        timeout=SERVICE_TIMEOUT,
    )
    return result, event


def sha1(blob: bytes) -> str:
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


def read(opener: Opener) -> bytes:
    with opener("rb") as handle:
        return bytes(handle.read())


def test_uploaded_directory_reaches_ingest_metadata_100(
    pacifica_stack: PacificaStack,  # noqa: F811 (fixture imported above)
    event_sink: EventSink,  # noqa: F811
    tmp_path: Path,
) -> None:
    files = make_tree(tmp_path / "tree")
    tag = uuid.uuid4().hex

    result, event = upload(pacifica_stack, event_sink, tmp_path / "tree", tag)

    assert result.state["state"] == "OK", result.state
    assert result.state["task"] == "ingest metadata", result.state
    assert float(result.state["task_percent"]) == 100, result.state
    assert result.state["job_id"] == result.job_id
    # The job id is the new transaction's id, in the event and in metadata's tables.
    assert event["eventID"] == f"metadata.ingest.{result.job_id}"
    sip = requests.get(
        f"{pacifica_stack.metadata_url}/transsip", params={"_id": result.job_id}, timeout=30
    ).json()
    assert [(r["submitter"], r["project"], r["instrument"]) for r in sip] == [
        (SUBMITTER, PROJECT, INSTRUMENT)
    ]
    # Every file arrived with the name, directory, size and hash our bundle declared.
    declared = {
        (rec["subdir"], rec["name"], rec["size"], rec["hashsum"])
        for rec in result.metadata
        if rec["destinationTable"] == "Files"
    }
    assert declared == {
        (*posixpath.split(path), len(blob), sha1(blob)) for path, blob in files.items()
    }
    ingested = {
        (rec["subdir"], rec["name"], rec["size"], rec["hashsum"])
        for rec in event["data"]
        if rec["destinationTable"] == "Files"
    }
    assert ingested == declared
    stored = requests.get(
        f"{pacifica_stack.metadata_url}/files",
        params={"transaction": result.job_id},
        timeout=30,
    ).json()
    assert {(r["subdir"], r["name"], r["size"], r["hashsum"]) for r in stored} == declared
    key_value = {"destinationTable": "TransactionKeyValue", "key": "run_tag", "value": tag}
    assert key_value in event["data"]


def test_bundle_the_policy_rejects_raises_with_ingests_exception(
    pacifica_stack: PacificaStack,  # noqa: F811
    tmp_path: Path,
) -> None:
    make_tree(tmp_path / "tree")
    runner = RemoteUploaderRunner(pacifica_stack.ingest_url)

    with pytest.raises(UploadError) as raised:
        runner.upload(
            str(tmp_path / "tree"), transaction=transaction("9999"), timeout=SERVICE_TIMEOUT
        )

    message = str(raised.value)
    assert "Policy Validation" in message
    assert "Precondition Failed" in message
    assert "Invalid values for project" in message


def test_downloader_fetches_ingested_files_through_cartd_byte_identical(
    pacifica_stack: PacificaStack,  # noqa: F811
    event_sink: EventSink,  # noqa: F811
    tmp_path: Path,
) -> None:
    originals = make_tree(tmp_path / "tree")
    _, event = upload(pacifica_stack, event_sink, tmp_path / "tree", uuid.uuid4().hex)
    files = File.from_event(event)
    assert sorted(file.path for file in files) == sorted(originals)
    assert all(isinstance(file._id, int) and file.hashtype == "sha1" for file in files)
    runner = RemoteDownloaderRunner(pacifica_stack.cartd_url)

    openers = runner.download(str(tmp_path / "down"), files, timeout=SERVICE_TIMEOUT)

    assert len(openers) == len(files)
    for file, opener in zip(files, openers, strict=True):
        blob = read(opener)
        assert blob == originals[file.path], file.path
        assert sha1(blob) == file.hashsum, file.path
        local = tmp_path.joinpath("down", "data", *file.path.split("/"))
        assert local.read_bytes() == originals[file.path]
    by_path = dict(zip((file.path for file in files), openers, strict=True))
    with by_path[NON_ASCII]() as text:
        assert text.read() == originals[NON_ASCII].decode("utf-8")


def test_downloader_takes_files_as_metadata_stores_them_in_any_order(
    pacifica_stack: PacificaStack,  # noqa: F811
    event_sink: EventSink,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Files read back from metadata's ``/files`` table, a subset, in reverse order."""
    originals = make_tree(tmp_path / "tree")
    result, _ = upload(pacifica_stack, event_sink, tmp_path / "tree", uuid.uuid4().hex)
    records = requests.get(
        f"{pacifica_stack.metadata_url}/files",
        params={"transaction": result.job_id},
        timeout=30,
    ).json()
    known = {field.name for field in fields(File)}
    files = [File(**{k: v for k, v in rec.items() if k in known}) for rec in records]
    wanted = sorted((f for f in files if f.path != TEXT), key=lambda f: f.path, reverse=True)
    assert [f.path for f in wanted] == [NON_ASCII, BINARY]

    openers = RemoteDownloaderRunner(pacifica_stack.cartd_url).download(
        str(tmp_path / "down"), wanted, timeout=SERVICE_TIMEOUT
    )

    assert [read(opener) for opener in openers] == [originals[NON_ASCII], originals[BINARY]]
    assert not tmp_path.joinpath("down", "data", TEXT).exists()


def test_cart_with_a_wrong_hash_fails_with_cartds_message(
    pacifica_stack: PacificaStack,  # noqa: F811
    event_sink: EventSink,  # noqa: F811
    tmp_path: Path,
) -> None:
    make_tree(tmp_path / "tree")
    _, event = upload(pacifica_stack, event_sink, tmp_path / "tree", uuid.uuid4().hex)
    text = next(f for f in File.from_event(event) if f.path == TEXT)
    file = replace(text, hashsum=sha1(b"not the content"))

    with pytest.raises(DownloadError, match="hash does not match"):
        RemoteDownloaderRunner(pacifica_stack.cartd_url).download(
            str(tmp_path / "down"), [file], timeout=SERVICE_TIMEOUT
        )
