"""Small real HTTP servers that speak the cartd and ingest protocols, for tests.

Each fake is a ``ThreadingHTTPServer`` on ``127.0.0.1`` port 0 served from a
daemon thread; use it as a context manager and read ``.url``. Behaviour is
set through plain attributes before (or while) the client runs, and every
request is recorded in ``.requests``. State advances per request, never per
wall-clock time, so tests need no sleeps.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from pacifica.dispatcher.models import File

_ServiceT = TypeVar("_ServiceT", bound="_FakeService")
TarBuilder = Callable[[tarfile.TarFile, list[dict[str, Any]]], None]

INGEST_SUCCESS_SEQUENCE: list[tuple[str, str, str]] = [
    ("OK", "UPLOADING", "0.00000"),
    ("OK", "open tar", "100.00000"),
    ("OK", "load metadata", "100.00000"),
    ("OK", "Policy Validation", "100.00000"),
    ("OK", "ingest files", "100.00000"),
    ("OK", "ingest metadata", "0.00000"),
    ("OK", "ingest metadata", "100.00000"),
]


@dataclass(frozen=True)
class RecordedRequest:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


def file_for(file_id: int, relpath: str, content: bytes) -> File:
    """The ``File`` metadata Pacifica would hold for ``content`` stored at ``relpath``."""
    subdir, _, name = relpath.rpartition("/")
    return File(
        _id=file_id,
        name=name,
        subdir=subdir,
        size=len(content),
        hashtype="sha1",
        hashsum=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], fake: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def record(self, body: bytes = b"") -> RecordedRequest:
        parts = urlsplit(self.path)
        request = RecordedRequest(
            self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body
        )
        with self.server.fake.lock:
            self.server.fake.requests.append(request)
        return request

    def reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if code != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, code: int, document: Any) -> None:
        self.reply(code, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def reply_html(self, code: int) -> None:
        title = f"{code} {HTTPStatus(code).phrase}"
        page = f"<html><body><h1>{title}</h1><p>while serving {self.path}</p></body></html>"
        self.reply(code, page.encode(), {"Content-Type": "text/html"})

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class _FakeService:
    handler: type[_Handler]

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server = _Server(self.handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def requests_for(self, method: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.method == method]

    def __enter__(self: _ServiceT) -> _ServiceT:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _CartdHandler(_Handler):
    protocol_version = "HTTP/1.0"  # the tar body ends when the connection closes

    def do_POST(self) -> None:
        request = self.record(self.read_body())
        fake: FakeCartd = self.server.fake
        if fake.create_status != 201:
            self.reply_html(fake.create_status)
            return
        document = json.loads(request.body)
        with fake.lock:
            fake.carts[request.path.strip("/")] = {"fileids": document["fileids"], "polls": 0}
        self.reply_json(201, {"message": "Cart Processing has begun"})

    def do_HEAD(self) -> None:
        request = self.record()
        fake: FakeCartd = self.server.fake
        with fake.lock:
            cart = fake.carts.get(request.path.strip("/"))
            if cart is not None:
                cart["polls"] += 1
                polls = cart["polls"]
        if cart is None:
            self.reply(404)
        elif polls <= fake.staging_polls or fake.final_status == "staging":
            self.reply(204, headers={"X-Pacifica-Status": "staging", "X-Pacifica-Message": ""})
        elif fake.final_status == "error":
            headers = {"X-Pacifica-Status": "error", "X-Pacifica-Message": fake.error_message}
            self.reply(500, headers=headers)
        else:
            self.reply(204, headers={"X-Pacifica-Status": "ready", "X-Pacifica-Message": ""})

    def do_GET(self) -> None:
        request = self.record()
        fake: FakeCartd = self.server.fake
        cart = fake.carts.get(request.path.strip("/"))
        if cart is None:
            self.reply_html(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.end_headers()
        with tarfile.open(fileobj=self.wfile, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            (fake.tar_builder or fake.build_tar)(tar, cart["fileids"])

    def do_DELETE(self) -> None:
        request = self.record()
        fake: FakeCartd = self.server.fake
        with fake.lock:
            fake.deleted.append(request.path.strip("/"))
        self.reply_json(200, {"message": "Cart deleted"})


class FakeCartd(_FakeService):
    """A cartd: carts serve the bytes in ``archive`` (file id -> bytes or a file path).

    ``staging_polls``: HEADs that answer ``staging`` before ``final_status``
    (``ready``, ``error`` or ``staging`` forever). ``overrides`` replaces a path's
    served bytes (to fake corruption); ``tar_builder`` replaces the whole tar.
    """

    handler = _CartdHandler

    def __init__(self) -> None:
        super().__init__()
        self.archive: dict[str, bytes | Path] = {}
        self.overrides: dict[str, bytes] = {}
        self.carts: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.staging_polls = 0
        self.final_status = "ready"
        self.error_message = "Failed to fetch file 7 from the archive"
        self.create_status = 201
        self.tar_builder: TarBuilder | None = None

    def add(self, file_id: int, relpath: str, content: bytes) -> File:
        """Store ``content`` as file ``file_id``; return its metadata."""
        self.archive[str(file_id)] = content
        return file_for(file_id, relpath, content)

    def build_tar(self, tar: tarfile.TarFile, fileids: list[dict[str, Any]]) -> None:
        """The real cartd's layout: ``data/<path>`` per requested file."""
        for item in fileids:
            path = item["path"]
            stored = self.overrides.get(path, self.archive[str(item["id"])])
            info = tarfile.TarInfo(f"data/{path}")
            if isinstance(stored, Path):
                info.size = stored.stat().st_size
                with stored.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(stored)
                tar.addfile(info, io.BytesIO(stored))


class _IngestHandler(_Handler):
    def do_POST(self) -> None:
        fake: FakeIngest = self.server.fake
        parts = urlsplit(self.path)
        if parts.path != "/upload":
            self.read_body()
            self.record()
            self.reply_html(404)
            return
        job_id, stored = fake.store_upload(self.rfile, int(self.headers.get("Content-Length") or 0))
        self.record()
        with fake.lock:
            fake.uploads[job_id] = stored
        self.reply_json(200, fake.state_of(job_id, 0))

    def do_GET(self) -> None:
        request = self.record()
        fake: FakeIngest = self.server.fake
        if request.path != "/get_state":
            self.reply_html(404)
            return
        if fake.status_html_error:
            self.reply_html(fake.status_html_error)
            return
        if fake.status_text:
            self.reply(200, fake.status_text.encode(), {"Content-Type": "text/plain"})
            return
        job_id = int(request.query["job_id"][0])
        with fake.lock:
            if job_id not in fake.uploads or fake.forget_jobs:
                message = f"job ID {job_id} does not exist."
                self.reply_json(404, {"status": "404 Not Found", "message": message})
                return
            fake.polls[job_id] = fake.polls.get(job_id, 0) + 1
            step = fake.polls[job_id]
        self.reply_json(200, fake.state_of(job_id, step))


class FakeIngest(_FakeService):
    """An ingest: stores uploaded bundles and walks each job through ``sequence``.

    The upload answer is step 0; each ``get_state`` advances one step and stays
    on the last. Bundles are kept as files (see ``bundle``) so large uploads
    stay off the heap. ``get_state`` can be made to answer an HTML error page
    (``status_html_error``), plain text (``status_text``) or ingest's 404 for an
    unknown job (``forget_jobs``).
    """

    handler = _IngestHandler

    def __init__(self) -> None:
        super().__init__()
        self.sequence: list[tuple[str, str, str]] = list(INGEST_SUCCESS_SEQUENCE)
        self.exception = ""
        self.uploads: dict[int, Path] = {}
        self.polls: dict[int, int] = {}
        self.status_html_error = 0
        self.status_text = ""
        self.forget_jobs = False
        self._next_job = 1
        self._dir = Path(tempfile.mkdtemp(prefix="fake-ingest-"))

    def fail_at(self, task: str, exception: str) -> None:
        """Make every job fail at ``task`` with ``exception``."""
        self.sequence = [("OK", "UPLOADING", "0.00000"), ("FAILED", task, "0.00000")]
        self.exception = exception

    def never_complete(self) -> None:
        """Make every job stay in ``ingest files`` forever."""
        self.sequence = [("OK", "UPLOADING", "0.00000"), ("OK", "ingest files", "0.00000")]

    def store_upload(self, stream: Any, length: int) -> tuple[int, Path]:
        """Copy ``length`` body bytes to a new file; return the new job id and the file."""
        with self.lock:
            job_id = self._next_job
            self._next_job += 1
        path = self._dir / f"{job_id}.tar"
        with path.open("wb") as handle:
            shutil.copyfileobj(_Limited(stream, length), handle, 1 << 20)
        return job_id, path

    def bundle(self, job_id: int) -> Path:
        """The bundle uploaded as ``job_id``."""
        return self.uploads[job_id]

    def state_of(self, job_id: int, step: int) -> dict[str, Any]:
        """Ingest's state object for ``job_id`` at ``step`` of the sequence."""
        state, task, percent = self.sequence[min(step, len(self.sequence) - 1)]
        return {
            "job_id": job_id,
            "state": state,
            "task": task,
            "task_percent": percent,
            "complete": state == "FAILED" or (task == "ingest metadata" and float(percent) == 100),
            "updated": "2026-01-01 00:00:00",
            "created": "2026-01-01 00:00:00",
            "exception": self.exception if state == "FAILED" else "",
        }

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self._dir, ignore_errors=True)


class _Limited:
    """Reads at most ``remaining`` bytes from a socket file."""

    def __init__(self, stream: Any, remaining: int) -> None:
        self._stream = stream
        self._remaining = remaining

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size < 0 else min(size, self._remaining)
        data: bytes = self._stream.read(size)
        self._remaining -= len(data)
        return data
