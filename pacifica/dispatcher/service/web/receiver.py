"""``POST /receive`` as plain WSGI, in front of the CherryPy application for everything else."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cherrypy

from pacifica.dispatcher import metrics
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import MethodNotAllowedError, NotFoundError, OverloadedError
from pacifica.dispatcher.events import ReceivedEvent, parse_http
from pacifica.dispatcher.service.dispatch import Acceptance
from pacifica.dispatcher.service.http import (
    OVERLOADED_RETRY_AFTER,
    RETRY_AFTER,
    encode_json,
    error_body,
    read_limited,
    request_headers_of,
    status_line,
)
from pacifica.dispatcher.service.web.common import app_config

log = logging.getLogger(__name__)

# Stores events and returns once they are committed (``intake.Intake.submit``).
Accept = Callable[[Sequence[ReceivedEvent]], list[Acceptance]]
# Checks a request's headers and body before anything is parsed or stored; raises to refuse
# (e.g. ``InvalidSignatureError`` → 401). A consumer verifies its producer's signatures with it.
Verify = Callable[[Mapping[str, str], bytes], None]


class Receiver:
    """``/receive`` as a plain WSGI app in front of CherryPy; every other path goes to ``fallback``.

    Receiving is nearly all of a dispatcher's traffic, and CherryPy's request
    machinery (hooks, tools, dispatcher, access log) costs more than parsing
    and storing an event does (BENCHMARKS.md), so this one endpoint is served
    without it. Errors come from the same ``ERROR_STATUS`` table and have the
    same JSON shape as CherryPy's.
    """

    def __init__(
        self,
        settings: Settings,
        accept: Accept,
        fallback: cherrypy.Application,
        verify: Verify | None = None,
    ) -> None:
        self.settings = settings
        self.accept = accept
        self.fallback = fallback
        self.verify = verify

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Serve ``/receive``; hand anything else to CherryPy."""
        path = environ.get("PATH_INFO", "")
        if path != "/receive" and not path.startswith("/receive/"):
            return self.fallback(environ, start_response)  # type: ignore[no-any-return]
        headers = [("Content-Type", "application/json")]
        try:
            code, body = self._receive(environ, path, headers)
        except Exception as exc:
            code, body = error_body(exc)
            overloaded = isinstance(exc, OverloadedError)
            outcome = "overloaded" if overloaded else {503: "unavailable", 500: "error"}.get(code)
            metrics.count_received(outcome or "invalid")
            if code == 500:
                log.error("unhandled error receiving an event", exc_info=True)
            if code == 503:
                headers.append(
                    ("Retry-After", OVERLOADED_RETRY_AFTER if overloaded else RETRY_AFTER)
                )
        payload = encode_json(body)
        headers.append(("Content-Length", str(len(payload))))
        start_response(status_line(code), headers)
        return [payload]

    def _receive(
        self, environ: dict[str, Any], path: str, headers: list[tuple[str, str]]
    ) -> tuple[int, Any]:
        if path != "/receive":
            raise NotFoundError(f"no such path: {path}")
        if environ.get("REQUEST_METHOD") != "POST":
            headers.append(("Allow", "POST"))
            raise MethodNotAllowedError("/receive takes POST")
        request_headers = request_headers_of(environ)
        body = read_limited(
            environ["wsgi.input"], environ.get("CONTENT_LENGTH"), self.settings.max_body_bytes
        )
        if self.verify is not None:
            self.verify(request_headers, body)
        events = parse_http(request_headers, body)
        accepted = self.accept(events)
        created = sum(a.created for a in accepted)
        metrics.count_received("accepted", created)
        if created < len(accepted):
            metrics.count_received("duplicate", len(accepted) - created)
        ids = [a.uuid for a in accepted]
        headers.append(("Location", f"/status/{ids[0]}"))
        content_type = request_headers.get("Content-Type", "")
        batch = len(events) > 1 or "batch" in content_type
        if log.isEnabledFor(logging.DEBUG):
            log.debug("received %s", ", ".join(f"{e.source} {e.id}" for e in events))
        return (202 if any(a.created for a in accepted) else 200), (ids if batch else ids[0])


class MountableReceiver(cherrypy.Application):  # type: ignore[misc]  # CherryPy is untyped
    """A ``Receiver`` as a ``cherrypy.Application``, for code that mounts one itself
    (``cherrypy.tree.mount(application)`` in an upstream 0.2.5 ``__main__.py``)."""

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(receiver.fallback.root, "", app_config())
        self.receiver = receiver

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Serve the request through the receiver (``/receive``) and its API."""
        return self.receiver(environ, start_response)
