"""Outgoing webhook HTTP with one hard deadline, a capped answer and the address policy.

``requests``' timeout applies to each socket read, so a target trickling a
byte at a time keeps a request open for ever. Here every request runs under
a ``Deadline``: a timer that, when the time is up, shuts down the sockets the
request uses (connect, send, headers and answer alike), so the request ends
within its budget whatever the peer does. Only the first ``limit`` bytes of
an answer are read. Connections are made by ``GuardedHTTPConnection``, which
checks the address actually connected to against the ``AddressPolicy``
(DNS rebinding cannot reach an internal host), and errors are described
without the URL (its query string may hold a secret).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from pacifica.dispatcher.subscriptions.addresses import AddressNotAllowedError, AddressPolicy

_local = threading.local()


@dataclass
class Deadline:
    """The budget of one request: the connections it uses, shut down when time is up."""

    seconds: float
    policy: AddressPolicy | None
    connections: list[HTTPConnection] = field(default_factory=list)
    expired: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, connection: HTTPConnection) -> None:
        """Shut ``connection`` down when the deadline passes (at once if it has)."""
        with self.lock:
            self.connections.append(connection)
        if self.expired.is_set():
            _shut(connection)

    def expire(self) -> None:
        """Time is up: shut down every connection this request used."""
        self.expired.set()
        with self.lock:
            watched = list(self.connections)
        for connection in watched:
            _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def deadline(seconds: float, policy: AddressPolicy | None) -> Iterator[Deadline]:
    """Run the block's requests (in this thread) under one deadline and address policy."""
    budget = Deadline(seconds, policy)
    previous = getattr(_local, "deadline", None)
    _local.deadline = budget
    timer = threading.Timer(seconds, budget.expire)
    timer.daemon = True
    timer.start()
    try:
        yield budget
    finally:
        timer.cancel()
        _local.deadline = previous


def _admit(connection: HTTPConnection) -> None:
    """Check a new connection's peer against the policy of the request that made it."""
    budget: Deadline | None = getattr(_local, "deadline", None)
    if budget is None or budget.policy is None or connection.sock is None:
        return
    peer = str(connection.sock.getpeername()[0])
    if not budget.policy.permits(peer):
        connection.sock.close()
        connection.sock = None
        raise AddressNotAllowedError("the target's address is internal and not allowed")


def _watch(connection: HTTPConnection) -> None:
    budget: Deadline | None = getattr(_local, "deadline", None)
    if budget is not None:
        budget.watch(connection)


class GuardedHTTPConnection(HTTPConnection):
    """An HTTP connection under the current request's deadline and address policy."""

    def connect(self) -> None:
        _watch(self)
        super().connect()
        _admit(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # a pooled connection serves this request too: watch it again
        super().request(*args, **kwargs)


class GuardedHTTPSConnection(HTTPSConnection):
    """An HTTPS connection under the current request's deadline and address policy."""

    def connect(self) -> None:
        _watch(self)
        super().connect()
        _admit(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class GuardedHTTPPool(HTTPConnectionPool):
    """A pool of guarded HTTP connections."""

    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSPool(HTTPSConnectionPool):
    """A pool of guarded HTTPS connections."""

    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections are guarded (deadline and address policy)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPPool,
            "https": GuardedHTTPSPool,
        }


def guarded(session: requests.Session) -> requests.Session:
    """``session`` with guarded adapters for http and https (idempotent); proxies not taken from
    the environment, since the address connected to must be the target's."""
    if not isinstance(session, requests.Session):
        return session  # a stand-in (tests): nothing to guard
    if not isinstance(session.get_adapter("http://x"), GuardedAdapter):
        session.mount("http://", GuardedAdapter())
        session.mount("https://", GuardedAdapter())
    session.trust_env = False
    return session


class Answer(NamedTuple):
    """What a request got: the status (None: no answer), the answer's first bytes, a safe error."""

    status_code: int | None
    head: bytes
    retry_after: str | None
    duration: float
    error: str | None = None


def post(
    session: requests.Session,
    seconds: float,
    policy: AddressPolicy | None,
    limit: int,
    **request: Any,
) -> Answer:
    """POST within ``seconds`` in total, reading at most ``limit`` bytes of the answer.

    Never raises for network trouble; the error text never holds the URL.
    """
    started = time.monotonic()
    with deadline(seconds, policy) as budget:
        try:
            response = guarded(session).post(
                timeout=seconds, allow_redirects=False, stream=True, **request
            )
        except requests.RequestException as exc:
            error = describe(exc, budget)
            return Answer(None, b"", None, time.monotonic() - started, error)
        try:
            head = _read_head(response, limit)
        finally:
            response.close()
    retry_after = response.headers.get("Retry-After")
    return Answer(response.status_code, head, retry_after, time.monotonic() - started)


def _read_head(response: requests.Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of the answer; what arrived before a cut-off is kept."""
    head = b""
    with suppress(Exception):  # a cut-off answer still has its status
        for chunk in response.raw.stream(min(limit, 256), decode_content=False):
            head += chunk
            if len(head) >= limit:
                break
    return head[:limit]


def describe(error: BaseException, budget: Deadline) -> str:
    """A short description of a failed request that never quotes the URL."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
        if current is None and chain[-1].args and isinstance(chain[-1].args[-1], BaseException):
            current = chain[-1].args[-1]  # urllib3's MaxRetryError keeps its reason as an argument
    for cause in chain:
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException) and reason not in chain:
            chain.append(reason)
    if any(isinstance(c, AddressNotAllowedError) for c in chain):
        return "refused: the target's address is internal and not in ALLOWED_TARGET_NETWORKS"
    if budget.expired.is_set():
        return f"no complete answer within {budget.seconds:g}s"
    kind = type(error).__name__  # the class name is safe to show; its message has the URL
    if isinstance(error, requests.Timeout):
        return f"{kind}: timed out"
    if isinstance(error, requests.exceptions.SSLError):
        return f"{kind}: TLS error"
    if isinstance(error, requests.ConnectionError):
        return f"{kind}: could not connect, or the connection failed"
    return f"{kind}: request failed"
