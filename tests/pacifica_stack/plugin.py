"""pytest fixtures for end-to-end tests against the real upstream Pacifica stack.

Import the fixtures into a test module (a non-root conftest may not use ``pytest_plugins``)::

    from tests.pacifica_stack.plugin import pacifica_stack, event_sink  # noqa: F401

* ``pacifica_stack`` (session): installs what is missing and starts the stack once, from a wiped
  state, with metadata's CloudEvents going to ``PACIFICA_NOTIFY_URL`` (default
  ``http://127.0.0.1:19070/receive``); stops it at the end of the session.  When the stack cannot
  run here (not root, not Linux, no apt-get...) it skips, but fails when ``CI`` is set.
* ``event_sink`` (function): an HTTP server on the notify URL's host and port that records every
  POSTed JSON body; ``wait_for(predicate, timeout)`` blocks until one matches.  Function-scoped so
  that each test sees only its own events and the port is free for a dispatcher in other tests.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pytest

from tests.pacifica_stack.stack import (
    DEFAULT_NOTIFY_URL,
    PacificaStack,
    StackError,
    stack_unavailable_reason,
    start_stack,
    stop_stack,
)

__all__ = ["EventSink", "ReceivedRequest", "event_sink", "notify_url", "pacifica_stack"]


def notify_url() -> str:
    """Return the URL metadata POSTs CloudEvents to (``PACIFICA_NOTIFY_URL`` or the default)."""
    return os.environ.get("PACIFICA_NOTIFY_URL") or DEFAULT_NOTIFY_URL


def _skip_or_fail(reason: str) -> NoReturn:
    """Skip locally; fail under CI (``CI`` set and non-empty), where the stack must run."""
    if os.environ.get("CI"):
        pytest.fail(f"Pacifica stack required under CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"Pacifica stack unavailable: {reason}")


class _Shared:
    """The one stack of this pytest process, shared by every module that imports the fixture.

    Each module importing ``pacifica_stack`` gets its own fixture definition (pytest registers
    imported fixtures per module), so "session scope" alone would start the stack once per module.
    """

    stack: PacificaStack | None = None
    users = 0
    failure: str | None = None


@pytest.fixture(scope="session")
def pacifica_stack() -> Iterator[PacificaStack]:
    """Start the real Pacifica stack once per session (wiped state, fixtures); stop it after."""
    reason = stack_unavailable_reason()
    if reason is not None:
        _skip_or_fail(reason)
    if _Shared.failure is not None:
        pytest.fail(_Shared.failure, pytrace=False)
    if _Shared.stack is None:
        try:
            _Shared.stack = start_stack(notify_url())
        except StackError as exc:
            _Shared.failure = f"could not start the Pacifica stack:\n{exc}"
            pytest.fail(_Shared.failure, pytrace=False)
    _Shared.users += 1
    try:
        yield _Shared.stack
    finally:
        _Shared.users -= 1
        if _Shared.users == 0:
            _Shared.stack = None
            stop_stack()


class ReceivedRequest:
    """One POST the sink received: path, headers and the decoded JSON body."""

    __slots__ = ("body", "headers", "path")

    def __init__(self, path: str, headers: dict[str, str], body: Any) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        kind = (
            self.body.get("eventType") if isinstance(self.body, dict) else type(self.body).__name__
        )
        return f"ReceivedRequest(path={self.path!r}, eventType={kind!r})"


class EventSink:
    """Loopback HTTP server that records every POSTed JSON body (thread-safe)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"notify URL needs an explicit host and port: {url!r}")
        self.url = url
        self._cond = threading.Condition()
        self._received: list[ReceivedRequest] = []
        self._server = ThreadingHTTPServer((parts.hostname, parts.port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="event-sink",
            daemon=True,
        )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            """Accept a JSON POST on any path, record it, answer 200 ``{}``."""

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.send_error(400, "body is not JSON")
                    sink._record(
                        ReceivedRequest(
                            self.path, dict(self.headers), raw.decode("utf-8", "replace")
                        )
                    )
                    return
                sink._record(ReceivedRequest(self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        return Handler

    def _record(self, request: ReceivedRequest) -> None:
        with self._cond:
            self._received.append(request)
            self._cond.notify_all()

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Snapshot of every request received so far (including non-JSON ones)."""
        with self._cond:
            return list(self._received)

    @property
    def events(self) -> list[Any]:
        """Snapshot of every JSON body received so far, in arrival order."""
        return [req.body for req in self.requests if not isinstance(req.body, str)]

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._cond:
            self._received.clear()

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        """Return the first JSON body (received or arriving) for which ``predicate`` is true.

        Waits on a condition variable with a deadline; raises :class:`TimeoutError` listing the
        event types received so far.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for req in self._received[seen:]:
                    if not isinstance(req.body, str) and predicate(req.body):
                        return req.body
                seen = len(self._received)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [
                        req.body.get("eventType") if isinstance(req.body, dict) else req.body
                        for req in self._received
                    ]
                    raise TimeoutError(
                        f"no matching event at {self.url} within {timeout:.0f}s; got {kinds}"
                    )
                self._cond.wait(remaining)


@pytest.fixture
def event_sink() -> Iterator[EventSink]:
    """Record the CloudEvents metadata POSTs to the notify URL during one test."""
    sink = EventSink(notify_url())
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
