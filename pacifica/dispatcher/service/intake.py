"""Group commit for the receiver: request threads hand events over, one writer commits them.

A request thread calls ``Intake.submit`` and waits until its events are
committed, so its answer still means "stored". Meanwhile the writer thread
takes everything that queued up and commits it in one transaction: a burst of
N requests costs one commit, not N. Broker messages are published afterwards
by a publisher thread, off the request path; an event whose message was never
published keeps ``enqueued`` empty and the workers' sweeper sends it.

At most ``backlog`` requests wait for the writer at once; one more is refused
at once (``OverloadedError``, a 503 with ``Retry-After``) instead of queueing
behind them, and nothing refused was stored, so the client's retry is safe.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pacifica.dispatcher.errors import OverloadedError, StorageUnavailableError
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.dispatch import Acceptance
from pacifica.dispatcher.storage import available, prompt_write_transaction

log = logging.getLogger(__name__)
# Publishes the events' messages and records them sent (``Outbox.send``).
Publish = Callable[[list[str]], list[str]]


@dataclass
class _Pending:
    events: Sequence[ReceivedEvent]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Acceptance] | None = None
    error: Exception | None = None


@dataclass
class Intake:
    """Stores events with group commit, then publishes their messages in the background."""

    publish: Publish
    max_batch: int = 500
    timeout: float = 60.0
    backlog: int = 56  # RECEIVE_BACKLOG
    _writes: queue.SimpleQueue[_Pending] = field(default_factory=queue.SimpleQueue)
    _sends: queue.SimpleQueue[tuple[list[str], int]] = field(default_factory=queue.SimpleQueue)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Condition = field(default_factory=threading.Condition)
    _unpublished: int = 0
    _waiting: int = 0
    _started: bool = False

    def submit(self, events: Sequence[ReceivedEvent]) -> list[Acceptance]:
        """Store events; return once they are committed.

        Raises:
            OverloadedError: ``backlog`` requests are already waiting; nothing was stored.
            StorageUnavailableError: the database did not commit them in time.
            Exception: whatever the database raised for these events.
        """
        self._start()
        with self._idle:
            if self._waiting >= self.backlog:
                raise OverloadedError(
                    f"{self._waiting} requests are waiting to be stored; send again shortly"
                )
            self._waiting += 1
            self._unpublished += 1
        pending = _Pending(events)
        self._writes.put(pending)
        try:
            stored = pending.done.wait(self.timeout)
        finally:
            with self._idle:
                self._waiting -= 1
        if not stored:
            raise StorageUnavailableError(
                f"the database did not store the event in {self.timeout}s"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted event's message was handed to the broker (for tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unpublished == 0, timeout)

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for target, name in (
                (self._write_loop, "intake-writer"),
                (self._publish_loop, "intake-publisher"),
            ):
                threading.Thread(target=target, name=name, daemon=True).start()
            self._started = True

    def _write_loop(self) -> None:
        while True:
            self._commit(self._take(self._writes, self._writes.get()))

    def _take(self, source: queue.SimpleQueue[_Pending], first: _Pending) -> list[_Pending]:
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                batch.append(source.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with available(), prompt_write_transaction():
                results = dispatch.accept_many([p.events for p in batch])
        except StorageUnavailableError as exc:  # every request of the batch: 503, send again
            log.warning("could not store %d request(s): %s", len(batch), exc)
            self._fail(batch, exc)
            return
        except Exception as exc:
            if len(batch) > 1:  # one bad request must not fail the others: retry one by one
                for pending in batch:
                    self._commit([pending])
                return
            log.warning("could not store an event: %r", exc)
            self._fail(batch, exc)
            return
        fresh = [a.uuid for result in results for a in result if a.created]
        for pending, result in zip(batch, results, strict=True):
            pending.result = result
            pending.done.set()
        self._sends.put((fresh, len(batch)))

    def _fail(self, batch: list[_Pending], error: Exception) -> None:
        for pending in batch:
            pending.error = error
            pending.done.set()
        self._finished(len(batch))

    def _publish_loop(self) -> None:
        while True:
            ids, submissions = self._sends.get()
            try:
                while True:
                    more, count = self._sends.get_nowait()
                    ids, submissions = ids + more, submissions + count
            except queue.Empty:
                pass
            self._send(ids)
            self._finished(submissions)

    def _send(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            with available():  # marking them sent is a query: a dead connection is dropped
                self.publish(ids)
        except StorageUnavailableError as exc:
            log.warning(
                "%d message(s) sent but not marked (%s); the sweeper will send again", len(ids), exc
            )
        except Exception:  # the sweeper publishes whatever is left unmarked
            log.exception("publishing %d message(s) failed; the sweeper will retry", len(ids))

    def _finished(self, count: int) -> None:
        with self._idle:
            self._unpublished -= count
            self._idle.notify_all()
