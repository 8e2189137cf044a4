"""The chores every worker runs in a background thread, on a schedule.

Every ``WORKER_HEARTBEAT`` seconds: say this worker is alive, take back
what workers silent for ``WORKER_DEAD_AFTER`` held (their events are sent
again at once), and checkpoint SQLite's log off the events' path. Every
``REQUEUE_INTERVAL``: sweep both outboxes for what the broker lost or was
never sent. While a replay is going (looked for with each heartbeat):
publish its messages as they fall due, every ``replay.TICK`` seconds, so a
replay keeps its rate whoever publishes it. Every hour, when ``RETENTION_DAYS`` is set:
purge final events older than that, with their records. A chore that fails
(the database or broker away) is logged and tried again on the next tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import StorageUnavailableError
from pacifica.dispatcher.history import replay
from pacifica.dispatcher.service.outbox import Outbox
from pacifica.dispatcher.storage import (
    available,
    checkpoint,
    events,
    pacing,
    utcnow,
    workers,
)

log = logging.getLogger(__name__)
PURGE_EVERY = 3600.0  # seconds between retention purges


def worker_name() -> str:
    """This worker's name in heartbeats: host and process id (children of a pool share it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Housekeeper:
    """Runs the chores of one worker until ``stop`` is set."""

    name: str
    settings: Settings
    events: Outbox[str]
    deliveries: Outbox[int]
    open_database: Callable[[], object]
    stop: threading.Event = field(default_factory=threading.Event)
    _next_sweep: float = 0.0
    _next_purge: float = 0.0
    _replaying: bool = False

    def run(self) -> None:
        """Do the chores every ``WORKER_HEARTBEAT`` seconds until stopped, then sign off;
        while replays are going, publish what falls due every ``replay.TICK`` seconds."""
        next_tick = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.settings.heartbeat_interval
                self.tick(now)
            if self._replaying:
                self.pace()
            wait = replay.TICK if self._replaying else next_tick - time.monotonic()
            self.stop.wait(max(0.0, wait))
        with contextlib.suppress(Exception), available():  # a dead database: it times out anyway
            workers.forget(self.name)

    def tick(self, now: float) -> None:
        """One round of chores; a failure is logged and the next round tries again."""
        try:
            with available():
                self.open_database()
                workers.beat(self.name)
                released = workers.release_dead(self.settings.worker_dead_after)
                if released:
                    log.warning("took back %d event(s) held by a dead worker", len(released))
                    self.events.send(released)
                self._replaying = bool(pacing.active())
                if now >= self._next_sweep:
                    self._next_sweep = now + self.settings.requeue_interval
                    self.events.sweep(self.settings.requeue_after)
                    self.deliveries.sweep(self.settings.requeue_after)
                if self.settings.retention_days and now >= self._next_purge:
                    self._next_purge = now + PURGE_EVERY
                    self.purge(self.settings.retention_days)
                checkpoint()
        except StorageUnavailableError as exc:  # expected during an outage: no traceback
            log.warning(
                "worker housekeeping: %s; trying again in %g s",
                exc,
                self.settings.heartbeat_interval,
            )
        except Exception:  # the housekeeper must outlive a database or broker outage
            log.exception(
                "worker housekeeping failed; trying again in %g s", self.settings.heartbeat_interval
            )

    def pace(self) -> None:
        """Publish the replays' messages that are due (a failure is logged: the next try is
        a tick away)."""
        try:
            with available():
                self._replaying = replay.publish_all_due(
                    replay.Publishers(self.events, self.deliveries)
                )
        except Exception:  # the housekeeper must outlive a database or broker outage
            log.exception("publishing replays failed; trying again in %g s", replay.TICK)

    def purge(self, days: float) -> int:
        """Delete final events older than ``days`` days, with their route runs and deliveries."""
        purged = events.purge(utcnow() - timedelta(days=days), final_only=True)
        if purged:
            log.info("purged %d event(s) older than %g day(s) (RETENTION_DAYS)", purged, days)
        return purged
