"""HTTP without a framework: the one table that turns errors into answers, and the strict
readers of what a request carries (body, task id, paging, headers, the user).

The plain-WSGI receiver and the CherryPy resources in ``web`` both use these,
so every endpoint answers bad input the same way.
"""

from __future__ import annotations

import json
import re
import unicodedata
import uuid as uuidlib
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, NamedTuple

from pacifica.dispatcher.errors import (
    AuthenticationRequiredError,
    ForbiddenError,
    InvalidEventError,
    InvalidRequestError,
    InvalidSubscriptionError,
    InvalidTaskIdError,
    MethodNotAllowedError,
    NotFoundError,
    RequestTooLargeError,
    StorageUnavailableError,
    UnsupportedContentTypeError,
)
from pacifica.dispatcher.storage import drop_connection, is_unavailable

# The one place where errors become HTTP answers: the nearest class along the MRO wins.
ERROR_STATUS: dict[type[Exception], int] = {
    UnsupportedContentTypeError: 415,
    InvalidEventError: 400,
    InvalidSubscriptionError: 400,
    InvalidRequestError: 400,
    InvalidTaskIdError: 422,
    RequestTooLargeError: 413,
    StorageUnavailableError: 503,
    AuthenticationRequiredError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    MethodNotAllowedError: 405,
}
MAX_PAGE = 1000
MAX_OFFSET = 10**15  # beyond any table, within every database's 64-bit integers
MAX_USER_LENGTH = 255  # the user column's length
_DIGITS = re.compile(r"[0-9]{1,16}")


def encode_json(value: Any) -> bytes:
    """JSON as UTF-8; a lone surrogate in a message becomes its JSON escape, never an error."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace")


def status_for(error: BaseException) -> int:
    """The HTTP status for an error raised while serving a request (500 if unknown)."""
    return next((ERROR_STATUS[k] for k in type(error).__mro__ if k in ERROR_STATUS), 500)


RETRY_AFTER = "5"  # seconds, on 503: the database is restarting or busy


def error_body(error: BaseException) -> tuple[int, dict[str, str]]:
    """The status and JSON body answering ``error``; an unknown error's details stay in the log.

    A lost or refused database connection is a 503 (and this thread's
    connection is dropped, so the next request reconnects).
    """
    if is_unavailable(error) and not isinstance(error, StorageUnavailableError):
        drop_connection()
        error = StorageUnavailableError("the database is unavailable; try again shortly")
    code = status_for(error)
    message = str(error) if code != 500 else "internal error; see server log"
    return code, {"status": status_line(code), "message": message}


def read_limited(stream: Any, declared: str | None, limit: int) -> bytes:
    """Read a request body of ``declared`` length (or up to the end), refusing more than ``limit``.

    Raises:
        RequestTooLargeError: the body is (or declares itself) larger than ``limit``.
        InvalidEventError: the Content-Length is not a number.
    """
    if declared:
        if not declared.isdigit():
            raise InvalidEventError(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise RequestTooLargeError(f"body of {declared} bytes exceeds the {limit}-byte limit")
        return bytes(stream.read(int(declared)))
    body = bytes(stream.read(limit + 1))  # chunked: the server decodes it
    if len(body) > limit:
        raise RequestTooLargeError(f"body exceeds the {limit}-byte limit")
    return body


def parse_task_id(task_id: str | None) -> str:
    """Check a task id from the path.

    Raises:
        NotFoundError: it is absent.
        InvalidTaskIdError: it is not a UUID (422, as upstream).
    """
    if not task_id:
        raise NotFoundError("a task id is required: /status/<task_id>")
    try:
        return str(uuidlib.UUID(task_id))
    except ValueError:
        raise InvalidTaskIdError(f"task id {task_id!r} is not a UUID") from None


class Paging(NamedTuple):
    """Which page of a listing: at most ``limit`` rows, ``offset`` skipped, after ``after``
    (a row's (created, task id), from a ``Link: rel=next`` cursor) when given."""

    limit: int
    offset: int
    after: tuple[datetime, uuidlib.UUID] | None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CURSOR = re.compile(r"([0-9]{1,17})\.([0-9a-f]{32})")


def page_cursor(created: datetime, task_id: uuidlib.UUID) -> str:
    """The ``after`` cursor of the row (created, task id): the next page starts below it."""
    return f"{(created - _EPOCH) // timedelta(microseconds=1)}.{task_id.hex}"


def page_arguments(params: Mapping[str, Any]) -> Paging:
    """``limit`` (1..1000, default 100), ``offset`` (0..10**15) and ``after`` (a cursor from
    ``page_cursor``) from query parameters.

    Strict: ASCII digits only, each parameter at most once, no other parameter.

    Raises:
        InvalidRequestError: a parameter is not such an integer or cursor, repeated or
            unknown (the message names it).
    """
    unknown = sorted(set(params) - {"limit", "offset", "after"})
    if unknown:
        raise InvalidRequestError(
            f"unknown query parameter {unknown[0][:100]!r}; use limit, offset, after"
        )
    values = {}
    for name, default, low, high in (("limit", 100, 1, MAX_PAGE), ("offset", 0, 0, MAX_OFFSET)):
        text = _once(params, name, str(default))
        if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
            raise InvalidRequestError(f"{name} must be an integer {low}..{high}, got {text[:40]!r}")
        values[name] = int(text)
    after = None
    if "after" in params:
        found = _CURSOR.fullmatch(_once(params, "after", ""))
        if found is None or int(found[1]) > MAX_CURSOR:
            raise InvalidRequestError("after must be the cursor of a Link: rel=next header")
        after = (_EPOCH + timedelta(microseconds=int(found[1])), uuidlib.UUID(found[2]))
    return Paging(values["limit"], values["offset"], after)


MAX_CURSOR = (datetime(9999, 1, 1, tzinfo=timezone.utc) - _EPOCH) // timedelta(microseconds=1)


def _once(params: Mapping[str, Any], name: str, default: str) -> str:
    text = params.get(name, default)
    if not isinstance(text, str):
        raise InvalidRequestError(f"{name} must be given once")
    return text


def status_line(code: int) -> str:
    """``404 Not Found`` for 404."""
    return f"{code} {HTTPStatus(code).phrase}"


def request_headers_of(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers from a WSGI environ, as ``Title-Case`` names."""
    headers = {
        name[5:].replace("_", "-").title(): value
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers[name.replace("_", "-").title()] = environ[name]
    return headers


def user_from_header(header: str, raw: str) -> str:
    """The user a header names, exactly: its bytes as UTF-8, nothing trimmed.

    WSGI hands header values over as Latin-1 text; they are turned back into
    bytes and decoded as UTF-8, so ``é`` stays ``é``.

    Raises:
        InvalidRequestError: not UTF-8, a control character, or longer than the user column.
    """
    try:
        user = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise InvalidRequestError(f"the {header} header (the user) is not UTF-8") from None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in user):
        raise InvalidRequestError(f"the {header} header (the user) holds a control character")
    if len(user) > MAX_USER_LENGTH:
        raise InvalidRequestError(
            f"the {header} header (the user) is longer than {MAX_USER_LENGTH} characters"
        )
    return user
