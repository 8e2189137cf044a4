"""The outbox: publish messages for rows the database already holds, record what the broker took,
and sweep what was never sent or went stale.

Events and deliveries both use it. The database row is written first (an
event accepted, a delivery recorded); its message is published afterwards
and marked sent (``enqueued``). A row whose message was never published, or
whose message the broker lost, is found again by the sweep, which claims it
first so that two sweepers never both send it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pacifica.dispatcher.storage import deliveries, events
from pacifica.dispatcher.storage.statements import SWEEP_BATCH

log = logging.getLogger(__name__)
K = TypeVar("K")
SWEEP_BUDGET = 20.0  # seconds one sweep may spend sending a backlog


@dataclass(frozen=True)
class Outbox(Generic[K]):
    """One kind of outgoing message: how to publish, mark sent and find stranded rows."""

    name: str
    # Sends messages (delivered after a delay in seconds); returns the keys the broker took.
    publish: Callable[[list[K], float], list[K]]
    mark_sent: Callable[[Sequence[K]], None]
    # Claims the rows to send again: unsent, or sent more than ``grace`` seconds ago and still due.
    stranded: Callable[[float], list[K]]

    def send(self, keys: Sequence[K], delay: float = 0.0) -> list[K]:
        """Publish messages for ``keys`` and record the ones the broker took."""
        if not keys:
            return []
        sent = self.publish(list(keys), delay)
        self.mark_sent(sent)
        return sent

    def sweep(self, grace: float, budget: float = SWEEP_BUDGET) -> list[K]:
        """Send every stranded row again, a batch at a time, for up to ``budget`` seconds.

        A broker that lost its whole queue leaves a backlog of many batches:
        they go out at once rather than one batch per sweep interval. Returns
        the keys sent.
        """
        started, sent = time.monotonic(), []
        while True:
            batch = self.stranded(grace)
            went = self.send(batch)
            sent += went
            if len(batch) < SWEEP_BATCH or len(went) < len(batch):  # done, or the broker is away
                break
            if time.monotonic() - started > budget:
                break
        if sent:
            log.info("sent %d stranded %s message(s)", len(sent), self.name)
        return sent


def event_outbox(publish: Callable[[list[str], float], list[str]], lease: float) -> Outbox[str]:
    """The events' outbox: ``publish`` sends task ids; ``lease`` is ``PROCESSING_LEASE``."""
    return Outbox(
        "event", publish, events.mark_enqueued, lambda grace: events.claim_stranded(grace, lease)
    )


def delivery_outbox(publish: Callable[[list[int], float], list[int]]) -> Outbox[int]:
    """The deliveries' outbox: ``publish`` sends delivery ids."""
    return Outbox("delivery", publish, deliveries.mark_enqueued, deliveries.claim_overdue)
