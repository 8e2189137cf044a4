"""Uploader runners: local bundles, the ingest protocol, failures, timeouts and cleanup."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacifica.dispatcher.bundles import read_bundle
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.downloader_runners import LocalDownloaderRunner
from pacifica.dispatcher.errors import (
    TransactionDuplicateAttributeError,
    TransferTimeoutError,
    UploadError,
)
from pacifica.dispatcher.models import File, Transaction, TransactionKeyValue
from pacifica.dispatcher.uploader_runners import (
    LocalUploaderRunner,
    RemoteUploaderRunner,
    UploadResult,
    is_complete,
)
from tests.fake_pacifica import FakeIngest, file_for

MIB = 1 << 20
TRANSACTION = Transaction(submitter=10, project="1234a", instrument=54)
KEY_VALUES = [TransactionKeyValue(key="Tag", value="Blue")]
CONTENTS: dict[str, bytes] = {
    "filepath/filename.ext": b"Hello, world!\n",
    "all-bytes.bin": bytes(range(256)),
    "a/b/é/baré.txt": "ça va, héhé\n".encode(),
    "データ/測定結果.txt": "こんにちは、世界\n".encode(),
}


def make_tree(root: Path, tree: dict[str, bytes]) -> Path:
    for relpath, content in tree.items():
        path = root.joinpath(*relpath.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "source", CONTENTS)


@pytest.fixture
def ingest() -> Iterator[FakeIngest]:
    with FakeIngest() as fake:
        yield fake


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


def remote_runner(ingest: FakeIngest, scratch: Path, **options: Any) -> RemoteUploaderRunner:
    options.setdefault("poll_interval", 0.01)
    options.setdefault("max_poll_interval", 0.02)
    options.setdefault("request_timeout", 5.0)
    return RemoteUploaderRunner(ingest.url, temp_dir=str(scratch), **options)


# --- local runner -----------------------------------------------------------------------------


def test_local_uploader_writes_the_bundle_to_output_dir(tmp_path: Path, source: Path) -> None:
    result = LocalUploaderRunner(str(tmp_path / "out")).upload(
        str(source), transaction=TRANSACTION, transaction_key_values=KEY_VALUES
    )

    assert result.job_id is None
    assert result.state == {}
    assert result.bundle_path is not None
    assert Path(result.bundle_path).parent == tmp_path / "out"
    assert [p.name for p in (tmp_path / "out").iterdir()] == [Path(result.bundle_path).name]
    contents = read_bundle(result.bundle_path)
    assert contents.files == CONTENTS
    assert contents.metadata == result.metadata


def test_local_uploader_without_output_dir_only_builds_metadata(
    tmp_path: Path, source: Path
) -> None:
    before = sorted(tmp_path.rglob("*"))

    result = LocalUploaderRunner().upload(str(source), TRANSACTION, KEY_VALUES)

    assert result == UploadResult(metadata=result.metadata)
    assert sorted(tmp_path.rglob("*")) == before
    files = File.from_event(result.metadata)
    assert {f.path: f.hashsum for f in files} == {
        path: file_for(0, path, data).hashsum for path, data in CONTENTS.items()
    }
    assert Transaction.from_event(result.metadata) == TRANSACTION


def test_local_uploader_rejects_a_transaction_that_already_has_an_id(
    tmp_path: Path, source: Path
) -> None:
    with pytest.raises(TransactionDuplicateAttributeError):
        LocalUploaderRunner(str(tmp_path / "out")).upload(
            str(source), transaction=Transaction(_id=1, submitter=10)
        )

    assert not list((tmp_path / "out").iterdir())


def test_local_uploader_rejects_empty_metadata(source: Path) -> None:
    with pytest.raises(ValueError, match=r"MetaData is not valid yet\."):
        LocalUploaderRunner().upload(str(source))


def test_local_download_transform_upload_round_trip_keeps_binary_data(tmp_path: Path) -> None:
    make_tree(tmp_path / "archive", CONTENTS)
    files = [file_for(i, path, data) for i, path, data in _numbered(CONTENTS)]
    openers = LocalDownloaderRunner(str(tmp_path / "archive")).download(str(tmp_path / "in"), files)
    output = tmp_path / "transformed"
    for file, opener in zip(files, openers, strict=True):
        target = output.joinpath(*file.path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener("rb") as handle:
            target.write_bytes(handle.read().upper())

    result = LocalUploaderRunner(str(tmp_path / "out")).upload(str(output), TRANSACTION)

    assert result.bundle_path is not None
    assert read_bundle(result.bundle_path).files == {p: d.upper() for p, d in CONTENTS.items()}


def _numbered(tree: dict[str, bytes]) -> list[tuple[int, str, bytes]]:
    return [(i, path, data) for i, (path, data) in enumerate(tree.items(), start=1)]


# --- remote runner ----------------------------------------------------------------------------


def test_remote_uploader_returns_job_id_and_final_state(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    result = remote_runner(ingest, scratch).upload(
        str(source), transaction=TRANSACTION, transaction_key_values=KEY_VALUES
    )

    assert result.job_id == 1
    assert result.state["state"] == "OK"
    assert result.state["task"] == "ingest metadata"
    assert float(result.state["task_percent"]) == 100
    assert result.bundle_path is None
    assert len(ingest.requests_for("GET")) == len(ingest.sequence) - 1
    contents = read_bundle(ingest.bundle(1))
    assert contents.files == CONTENTS
    assert contents.metadata == result.metadata


def test_remote_uploader_posts_an_octet_stream_with_content_length(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    remote_runner(ingest, scratch).upload(str(source), TRANSACTION)

    (post,) = ingest.requests_for("POST")
    assert post.path == "/upload"
    assert post.headers["Content-Type"] == "application/octet-stream"
    assert int(post.headers["Content-Length"]) == ingest.bundle(1).stat().st_size
    assert all(r.query == {"job_id": ["1"]} for r in ingest.requests_for("GET"))


def test_remote_uploader_numbers_jobs_like_ingest(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    runner = remote_runner(ingest, scratch)

    assert [runner.upload(str(source), TRANSACTION).job_id for _ in range(2)] == [1, 2]


def test_remote_uploader_raises_with_ingest_exception_text_on_failed_job(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    ingest.fail_at("Policy Validation", "Precondition Failed: Invalid values for project")

    with pytest.raises(UploadError) as caught:
        remote_runner(ingest, scratch).upload(str(source), TRANSACTION)

    message = str(caught.value)
    assert "Policy Validation" in message
    assert "Precondition Failed: Invalid values for project" in message
    assert "job 1" in message


def test_remote_uploader_times_out_when_job_never_completes(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    ingest.never_complete()
    started = time.monotonic()

    with pytest.raises(TransferTimeoutError, match="ingest files") as caught:
        remote_runner(ingest, scratch).upload(str(source), TRANSACTION, timeout=0.3)

    assert isinstance(caught.value, TimeoutError)
    assert time.monotonic() - started < 3
    assert len(ingest.requests_for("GET")) >= 2


def test_remote_uploader_reports_html_404_from_a_wrong_upload_path(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    # Ingest's own docs say POST /ingest; the real route is /upload.
    runner = remote_runner(ingest, scratch, upload_path="/ingest")

    with pytest.raises(UploadError, match=r"HTTP 404 <html>.*Not Found"):
        runner.upload(str(source), TRANSACTION)

    assert not ingest.requests_for("GET")


def test_remote_uploader_reports_an_html_error_from_get_state(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    ingest.status_html_error = 502

    with pytest.raises(UploadError, match=r"HTTP 502 <html>"):
        remote_runner(ingest, scratch).upload(str(source), TRANSACTION)


def test_remote_uploader_reports_an_unknown_job_from_get_state(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    ingest.forget_jobs = True

    with pytest.raises(UploadError, match=r"HTTP 404 .*job ID 1 does not exist"):
        remote_runner(ingest, scratch).upload(str(source), TRANSACTION)


def test_remote_uploader_reports_a_non_json_answer(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    ingest.status_text = "Service Temporarily Unavailable (maintenance)"

    with pytest.raises(UploadError, match=r"HTTP 200, not JSON: Service Temporarily"):
        remote_runner(ingest, scratch).upload(str(source), TRANSACTION)


def test_remote_uploader_raises_when_ingest_is_unreachable(source: Path, scratch: Path) -> None:
    with FakeIngest() as gone:
        url = gone.url

    with pytest.raises(UploadError, match="failed"):
        RemoteUploaderRunner(url, temp_dir=str(scratch)).upload(str(source), TRANSACTION)

    assert not list(scratch.iterdir())


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ("complete", None),
        ("failed", UploadError),
        ("timeout", TransferTimeoutError),
        ("refused", UploadError),
    ],
)
def test_remote_uploader_removes_its_temporary_bundle(
    source: Path, ingest: FakeIngest, scratch: Path, outcome: str, error: type[Exception] | None
) -> None:
    if outcome == "failed":
        ingest.fail_at("ingest files", "boom")
    elif outcome == "timeout":
        ingest.never_complete()
    upload_path = "/nope" if outcome == "refused" else "/upload"
    runner = remote_runner(ingest, scratch, upload_path=upload_path)
    timeout = 0.1 if outcome == "timeout" else 10.0

    if error is None:
        runner.upload(str(source), TRANSACTION, timeout=timeout)
    else:
        with pytest.raises(error):
            runner.upload(str(source), TRANSACTION, timeout=timeout)

    assert not list(scratch.iterdir())


def test_remote_uploader_rejects_bad_metadata_before_contacting_ingest(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    with pytest.raises(TransactionDuplicateAttributeError):
        remote_runner(ingest, scratch).upload(str(source), Transaction(_id=3, submitter=1))

    assert not ingest.requests
    assert not list(scratch.iterdir())


def test_remote_uploader_sends_auth_options(
    source: Path, ingest: FakeIngest, scratch: Path
) -> None:
    options = {"headers": {"X-Http-Authed-User": "10"}}

    remote_runner(ingest, scratch, requests_options=options).upload(str(source), TRANSACTION)

    assert all(r.headers.get("X-Http-Authed-User") == "10" for r in ingest.requests)
    (post,) = ingest.requests_for("POST")
    assert post.headers["Content-Type"] == "application/octet-stream"


def test_remote_uploader_from_settings_uses_ingest_url_paths_and_timeouts(
    source: Path, ingest: FakeIngest
) -> None:
    settings = Settings(
        ingest_url=ingest.url + "/",
        auth_type="header",
        auth_header="X-Http-Authed-User: 10",
        transfer_timeout=9.0,
    )
    ingest.sequence = [("OK", "ingest metadata", "100.00000")]  # settings poll at 0.25 s

    runner = RemoteUploaderRunner.from_settings(settings)
    result = runner.upload(str(source), TRANSACTION)

    assert result.job_id == 1
    assert runner.upload_url == f"{ingest.url}/upload"
    assert runner.status_url == f"{ingest.url}/get_state"
    assert runner.default_timeout == 9.0
    assert ingest.requests[0].headers["X-Http-Authed-User"] == "10"


def test_remote_uploader_streams_a_large_bundle_with_bounded_memory(
    tmp_path: Path, ingest: FakeIngest, scratch: Path
) -> None:
    source = tmp_path / "large-source"
    source.mkdir()
    size = 64 * MIB
    with (source / "large.bin").open("wb") as handle:
        handle.truncate(size)
        handle.seek(size // 3)
        handle.write(b"\xff\x00\xfe")

    tracemalloc.start()
    try:
        result = remote_runner(ingest, scratch).upload(str(source), TRANSACTION)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 8 * MIB, f"peak {peak} bytes while uploading {size} bytes"
    assert ingest.bundle(1).stat().st_size > size
    assert result.metadata[-1]["size"] == size


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"state": "OK", "task": "ingest metadata", "task_percent": "100.00000"}, True),
        ({"state": "OK", "task": "ingest metadata", "task_percent": 100}, True),
        ({"state": "OK", "task": "ingest metadata", "task_percent": "99.9"}, False),
        ({"state": "OK", "task": "ingest files", "task_percent": "100.0"}, False),
        ({"state": "OK", "task": "UPLOADING", "task_percent": "0.0"}, False),
    ],
)
def test_is_complete_needs_ingest_metadata_at_100_percent(
    state: dict[str, Any], expected: bool
) -> None:
    assert is_complete(state) is expected


@pytest.mark.parametrize(
    "state",
    [
        {"status": "404 Not Found", "message": "job ID 4 does not exist."},
        {"state": "OK", "task": "ingest files"},
        {"state": "OK", "task": "ingest files", "task_percent": "lots"},
        {"state": "FAILED", "task": "ingest files", "task_percent": "0", "exception": "boom"},
    ],
)
def test_is_complete_raises_upload_error_on_failed_or_malformed_state(
    state: dict[str, Any],
) -> None:
    with pytest.raises(UploadError):
        is_complete(state, job_id=4)
