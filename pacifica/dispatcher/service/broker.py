"""kombu transports fixed for the faults a dispatcher must survive (kombu lives here and in the worker).

The embedded broker: kombu's filesystem transport, made safe for a reader racing a writer.

kombu writes a message file in place, so a worker listing the queue folder
can take a file that is still empty and die on the JSON error ("Unrecoverable
error: JSONDecodeError"). Here a message is written to a ``.part`` file the
reader's pattern does not match and renamed into the queue only when
complete; and a message that still cannot be decoded (truncated by a full
disk, written by something else) is logged and dropped instead of ending the
worker: the database still holds its events, and the sweeper sends them again.

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
import json
import logging
import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
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

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        while True:  # ends with a message or kombu's Empty from the folder running out
            try:
                return super()._get(queue)  # type: ignore[no-untyped-call]  # kombu: unannotated
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: the file is gone
                log.warning("dropped an undecodable message from queue %s: %s", queue, exc)


class Transport(filesystem.Transport):
    """kombu's filesystem transport with ``Channel`` above."""

    Channel = Channel


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
