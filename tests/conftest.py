"""Shared fixtures: test files, an in-process database, and a WSGI client."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import peewee
import pytest

TEST_FILES = Path(__file__).parent / "test_files"

#: The ``load_json`` fixture: reads a JSON file from ``tests/test_files``.
LoadJson = Callable[[str], Any]


def service_required(reason: str) -> None:
    """Skip locally when a real service is missing; fail under CI, where it must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"required service missing under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def load_json() -> LoadJson:
    def load(name: str) -> Any:
        return json.loads((TEST_FILES / name).read_text(encoding="utf-8"))

    return load


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[peewee.Database]:
    """A fresh, synced SQLite database bound to the models."""
    from pacifica.dispatcher.storage import open_database, sync_schema

    database = open_database(f"sqlite:///{tmp_path / 'test.sqlite3'}")
    sync_schema(database)
    yield database
    database.close()


@dataclass
class WSGIResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WSGIClient:
    """Calls a WSGI app in-process (no server): fast tests of the HTTP edge."""

    app: Any
    default_headers: dict[str, str] = field(default_factory=dict)
    check_openapi: bool = True

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = b"",
        headers: dict[str, str] | None = None,
    ) -> WSGIResponse:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        raw = body.encode() if isinstance(body, str) else body
        path, _, query = path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "wsgi.input": io.BytesIO(raw),
            "CONTENT_LENGTH": str(len(raw)),
            "wsgi.errors": sys.stderr,
        }
        setup_testing_defaults(environ)
        for name, value in {**self.default_headers, **(headers or {})}.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ[f"HTTP_{key}"] = value
        captured: dict[str, Any] = {}

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            captured["status"] = int(status.split(maxsplit=1)[0])
            captured["headers"] = dict(response_headers)
            return lambda data: None

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        if self.check_openapi:  # issue 15: the OpenAPI document describes every answer
            from tests.openapi_check import check_response

            check_response(method, path, captured["status"], captured["headers"], data)
        return WSGIResponse(captured["status"], captured["headers"], data)

    def get(self, path: str, **kwargs: Any) -> WSGIResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = b"", **kwargs: Any) -> WSGIResponse:
        return self.request("POST", path, body, **kwargs)


def outbox_of(publish: Callable[[list[str]], list[str]]) -> Any:
    """The events' outbox around a test's ``publish``: what it returns is recorded as sent."""
    from pacifica.dispatcher.service.outbox import event_outbox

    return event_outbox(lambda ids, delay: publish(ids), lease=3600).send


# --- issue 12 (hostile input): a scriptable HTTP server on loopback --------------------------
# Used by tests/unit/test_hostile_input.py and tests/integration/test_hostile.py.

import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402


@dataclass
class StubRequest:
    """One request a ``StubServer`` received; ``answer`` writes a complete response."""

    handler: BaseHTTPRequestHandler
    method: str
    path: str  # the raw request-target, exactly as the client sent it
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def answer(self, status: int, body: bytes = b"{}") -> None:
        self.handler.send_response(status)
        self.handler.send_header("Content-Type", "application/json")
        self.handler.send_header("Content-Length", str(len(body)))
        self.handler.end_headers()
        self.handler.wfile.write(body)


@dataclass
class StubServer:
    """A threaded HTTP server whose ``respond`` decides every answer; it records each request."""

    respond: Callable[[StubRequest], None]
    host: str = "127.0.0.1"
    received: list[StubRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def start(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = StubRequest(
                    self, self.command, self.path, dict(self.headers), self.rfile.read(length)
                )
                with stub.lock:
                    stub.received.append(request)
                try:
                    stub.respond(request)
                except OSError:  # the client hung up: what some tests want
                    self.close_connection = True

            do_GET = do_POST = _handle

            def log_message(self, *args: object) -> None:
                del args

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}"

    def seen(self, path_prefix: str = "") -> list[StubRequest]:
        with self.lock:
            return [r for r in self.received if r.path.startswith(path_prefix)]

    def stop(self) -> None:
        self.stopping.set()  # responders that wait or trickle watch this and give up
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
