"""kombu transports fixed for the faults a dispatcher must survive (kombu lives here and in the worker).

The embedded broker: kombu's filesystem transport, made safe for a reader racing a writer.

kombu writes a message file in place, so a worker listing the queue folder
can take a file that is still empty and die on the JSON error ("Unrecoverable
error: JSONDecodeError"). Here a message is written to a ``.part`` file the
reader's pattern does not match and renamed into the queue only when
complete; and a message that still cannot be decoded (truncated by a full
disk, written by something else) is logged and dropped instead of ending the
worker: the database still holds its events, and the sweeper sends them again.

kombu's consumer polls the folder, sleeping ``polling_interval`` when it is
empty, so an event arriving at an idle worker waited half an interval on
average. Here every consuming process listens on a doorbell (a FIFO of its
own in the ``wake_folder`` transport option), and a producer rings every
doorbell after adding a message: an idle worker takes it at once. The poll
stays as the fallback (a platform without FIFOs, a ring lost to a full pipe).

Redis: when the broker goes away, Celery closes the connection, and kombu
forgets its parameters; a task that finishes during the outage then
acknowledges through a new client built from those missing parameters and
fails with ``AttributeError`` ('NoneType' object has no attribute
'hostname'), which Celery takes as unrecoverable: the worker exits. Here that
case is the connection error it is, so the worker reconnects instead (the
unacknowledged message comes back later and finds its events final).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import uuid
from time import monotonic, sleep
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
from kombu.transport.virtual import Empty
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)


class Channel(filesystem.Channel):
    """A filesystem channel whose messages appear in the queue only when complete."""

    # kombu's two base classes name the second argument differently (payload, message).
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = f"{final}.part"  # "<id>.<queue>.msg.part" is not "<queue>.msg": never read
        try:
            with open(partial, "wb") as handle:
                handle.write(json.dumps(payload).encode("utf-8"))
            os.replace(partial, final)
        except OSError as exc:
            _remove_quietly(partial)
            raise ChannelError(f"cannot add {final!r} to the queue: {exc}") from exc
        folder = self.transport_options.get("wake_folder")
        if folder:
            ring(folder)

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        while True:  # ends with a message or kombu's Empty from the folder running out
            try:
                return super()._get(queue)  # type: ignore[no-untyped-call]  # kombu: unannotated
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: the file is gone
                log.warning("dropped an undecodable message from queue %s: %s", queue, exc)


class Transport(filesystem.Transport):
    """kombu's filesystem transport with ``Channel`` above, woken by its doorbell between polls."""

    Channel = Channel
    _doorbell: Doorbell | None = None
    _polling_only = False  # no doorbell can be made here: poll as kombu does

    # kombu's virtual transport takes ``timeout``; its base class declares only ``**kwargs``.
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        """kombu's loop (deliver one message, or wait and try again until ``timeout``), waiting
        on this process's doorbell instead of sleeping through ``polling_interval``.

        Raises:
            TimeoutError: no message came within ``timeout`` seconds (``socket.timeout``).
        """
        started = monotonic()
        doorbell = self._listen()
        cycle = self.cycle
        assert cycle is not None  # built in __init__
        while True:
            try:
                cycle.get(self._deliver, timeout=timeout)  # type: ignore[no-untyped-call]
                return
            except Empty:
                waited = monotonic() - started
                if timeout is not None and waited >= timeout:
                    raise TimeoutError() from None
                pause = self.polling_interval or 0.0
                if timeout is not None:
                    pause = min(pause, timeout - waited)
                if doorbell is None:
                    sleep(pause)
                else:
                    doorbell.wait(pause)

    def close_connection(self, connection: Any) -> None:
        """Close the channels and take this process's doorbell down."""
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None
        super().close_connection(connection)  # type: ignore[no-untyped-call]  # kombu: unannotated

    def _listen(self) -> Doorbell | None:
        """This process's doorbell, installed on first use (None: poll only)."""
        if self._doorbell is not None or self._polling_only:
            return self._doorbell
        folder = self.client.transport_options.get("wake_folder") if self.client else None
        self._polling_only = not folder or not hasattr(os, "mkfifo")
        if folder and not self._polling_only:
            try:
                self._doorbell = Doorbell.install(folder)
            except OSError as exc:
                log.warning("no doorbell in %s (%s): polling the queue only", folder, exc)
                self._polling_only = True
        return self._doorbell


class Doorbell:
    """A consuming process's FIFO in the wake folder; producers write a byte to ring it.

    A byte written while the consumer is busy stays in the pipe, so a message
    added between the consumer's last look and its wait still wakes it.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def install(cls, folder: str) -> Doorbell:
        """Create and open this process's FIFO (its final name only once it is open).

        Raises:
            OSError: the FIFO cannot be made or opened.
        """
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{os.getpid()}-{uuid.uuid4().hex}{DOORBELL_SUFFIX}")
        opening = f"{path}.new"  # a producer meeting a FIFO nobody opened yet would remove it
        os.mkfifo(opening, 0o600)
        try:
            fd = os.open(opening, os.O_RDWR | os.O_NONBLOCK)  # our own writer: never EOF
            os.replace(opening, path)
        except OSError:
            _remove_quietly(opening)
            raise
        return cls(path, fd)

    def wait(self, timeout: float) -> None:
        """Return when rung (clearing the rings) or after ``timeout`` seconds."""
        readable, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.fd, 4096):
                    pass

    def close(self) -> None:
        """Remove the FIFO and close it."""
        _remove_quietly(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)


DOORBELL_SUFFIX = ".doorbell"


def ring(folder: str) -> None:
    """Ring every consumer's doorbell in ``folder``; remove the doorbells nobody listens to."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.endswith(DOORBELL_SUFFIX):
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # its process is gone (killed): nobody reads it
                _remove_quietly(path)
            continue
        try:
            os.write(fd, b"\0")
        except OSError:  # full: it is rung already
            pass
        finally:
            os.close(fd)


class RedisChannel(redis.Channel):
    """A Redis channel that reports a closed connection as a connection error."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # closed by the consumer after the broker went away
            raise RedisConnectionError("the connection to the broker is closed")
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]  # kombu: unannotated


class RedisTransport(redis.Transport):
    """kombu's Redis transport with ``RedisChannel``."""

    Channel = RedisChannel


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


TRANSPORT = f"{__name__}:Transport"  # for Celery's ``broker_transport``: the embedded broker
REDIS_TRANSPORT = f"{__name__}:RedisTransport"
