"""What every CherryPy resource shares: JSON bodies and errors, the request's user, the config."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import cherrypy

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import AuthenticationRequiredError, NotFoundError
from pacifica.dispatcher.service.http import (
    RETRY_AFTER,
    encode_json,
    error_body,
    read_limited,
    user_from_header,
)

log = logging.getLogger(__name__)


def json_body(value: Any) -> bytes:
    """Serialise a response body as JSON and set the Content-Type."""
    cherrypy.response.headers["Content-Type"] = "application/json"
    return encode_json(value)


def json_error_page(status: str, message: str, traceback: str, version: str) -> str:
    """CherryPy's error page: ``{"status", "message"}`` as JSON, never a traceback."""
    del traceback, version
    cherrypy.response.headers["Content-Type"] = "application/json"
    return json.dumps({"status": status, "message": message})


def trim_error_body() -> None:
    """Undo CherryPy's space padding of short error bodies (an old Internet Explorer fix)."""
    body = cherrypy.response.body
    failed = str(cherrypy.response.status or "200")[:1] in ("4", "5")
    if failed and isinstance(body, list):
        cherrypy.response.body = [b"".join(body).rstrip(b" ")]
        cherrypy.response.headers.pop("Content-Length", None)


def error_response() -> None:
    """CherryPy's answer to an exception a handler raised: ``ERROR_STATUS``, as JSON.

    Unknown errors are a 500 whose traceback goes to the log, never the body.
    """
    error = sys.exc_info()[1] or RuntimeError("unknown error")
    code, body = error_body(error)
    if code == 500:
        log.error("unhandled error serving %s", cherrypy.url(), exc_info=True)
    cherrypy.response.status = code
    cherrypy.response.headers["Content-Type"] = "application/json"
    if code == 503:
        cherrypy.response.headers["Retry-After"] = RETRY_AFTER
    cherrypy.response.body = [encode_json(body)]


def read_body(limit: int) -> bytes:
    """The CherryPy request's body, refusing more than ``limit`` bytes (see ``read_limited``)."""
    return read_limited(
        cherrypy.request.body, cherrypy.request.headers.get("Content-Length"), limit
    )


class Missing:
    """The resource at a path nothing is mounted on: 404 whatever the method."""

    exposed = True

    def _not_found(self, *vpath: str, **params: str) -> bytes:
        raise NotFoundError(f"no such path: {cherrypy.request.path_info}")

    GET = POST = PUT = DELETE = HEAD = PATCH = _not_found


MISSING = Missing()


def request_user(settings: Settings) -> str:
    """The user the request's ``USER_HEADER`` names (or ``DEFAULT_USER``).

    Raises:
        AuthenticationRequiredError: neither names one.
    """
    header = settings.user_header
    raw = cherrypy.request.wsgi_environ.get("HTTP_" + header.upper().replace("-", "_"))
    user = user_from_header(header, raw) if raw else settings.default_user
    if not user:
        raise AuthenticationRequiredError(f"the {header} header is required to name the user")
    return str(user)


def html(text: str) -> bytes:
    cherrypy.response.headers["Content-Type"] = "text/html; charset=utf-8"
    cherrypy.response.headers["Cache-Control"] = "no-store"
    cherrypy.response.headers["X-Frame-Options"] = "DENY"  # no clickjacking of the buttons
    cherrypy.response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'"
    )
    return text.encode("utf-8")


def no_more(rest: tuple[str, ...]) -> None:
    """Refuse a longer path than the resource serves (404 naming it)."""
    if rest:
        raise NotFoundError(f"no such path: /{'/'.join(rest)}")


def app_config() -> dict[str, Any]:
    """The CherryPy application config shared by every deployment shape."""
    return {
        "/": {
            "request.dispatch": cherrypy.dispatch.MethodDispatcher(),
            "request.show_tracebacks": False,
            "request.error_response": error_response,
            "error_page.default": json_error_page,
            "hooks.after_error_response": trim_error_body,
            "hooks.before_finalize": trim_error_body,
            "tools.encode.on": True,
            "tools.encode.encoding": "utf-8",
        }
    }
