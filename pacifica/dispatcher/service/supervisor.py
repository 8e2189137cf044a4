"""Keeping a child process alive: restart it with growing delays when it exits, give up loudly.

``serve`` on the embedded default runs its worker as a child. A worker that
dies (a crash, an unrecoverable broker error, the out-of-memory killer) must
not leave the receiver answering ``202`` for events nothing will process:
the supervisor logs why it exited and starts a new one, waiting longer after
each quick failure; when the child keeps dying (more than ``max_restarts``
times within ``window`` seconds) it calls ``give_up`` with the reason.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
Process = subprocess.Popen[bytes]


def stop_process(process: Process, timeout: float = 30.0) -> None:
    """Ask a child to stop (SIGTERM: Celery's warm shutdown), then kill it if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Supervisor:
    """Runs ``start()``'s process until stopped, restarting it when it exits."""

    name: str
    start: Callable[[], Process]
    give_up: Callable[[str], None]
    max_restarts: int = 5
    window: float = 300.0
    first_delay: float = 1.0
    max_delay: float = 30.0
    stop_timeout: float = 30.0  # how long a stopping child may finish its work before SIGKILL
    process: Process | None = None
    restarts: int = 0
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self) -> None:
        """Start the process and the thread that watches it."""
        self.process = self.start()
        threading.Thread(target=self._watch, name=f"supervise-{self.name}", daemon=True).start()

    def stop(self) -> None:
        """Stop watching, then stop the process."""
        self._stopping.set()
        with self._lock:
            if self.process is not None:
                stop_process(self.process, self.stop_timeout)

    def _watch(self) -> None:
        delay = self.first_delay
        exits: deque[float] = deque()
        while not self._stopping.is_set():
            process, started = self.process, time.monotonic()
            assert process is not None
            code = self._wait(process)
            if code is None:
                return  # stopping
            now = time.monotonic()
            exits.append(now)
            while exits and exits[0] < now - self.window:
                exits.popleft()
            if len(exits) > self.max_restarts:
                self.give_up(
                    f"the {self.name} exited {len(exits)} times in {self.window:.0f} s "
                    f"(last exit status {code}); not restarting it again"
                )
                return
            if now - started > self.window:
                delay = self.first_delay  # it ran well for a while: this is a fresh failure
            log.error(
                "the %s exited with status %s; restarting it in %.0f s", self.name, code, delay
            )
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = self.start()
                self.restarts += 1
            delay = min(delay * 2, self.max_delay)

    def _wait(self, process: Process) -> int | None:
        """The process's exit status, or None once stopping was asked for."""
        while not self._stopping.is_set():
            try:
                return process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
        return None
