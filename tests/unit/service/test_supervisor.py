"""The supervisor restarts a child that exits, and gives up loudly when it keeps dying."""

from __future__ import annotations

import subprocess
import sys
import threading

from pacifica.dispatcher.service.supervisor import Process, Supervisor
from tests.integration.conftest import wait_for


def python(code: str) -> Process:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_child_that_dies_is_started_again() -> None:
    given_up: list[str] = []
    supervisor = Supervisor(
        "sleeper", lambda: python("import time; time.sleep(60)"), given_up.append, first_delay=0.05
    )
    supervisor.begin()
    try:
        first = supervisor.process
        assert first is not None
        first.kill()
        wait_for(lambda: supervisor.restarts == 1, timeout=10, what="a restart")
        second = supervisor.process
        assert second is not None
        assert second.pid != first.pid
        assert second.poll() is None  # the new one runs
        assert given_up == []
    finally:
        supervisor.stop()
    assert second.poll() is not None  # stopping the supervisor stops the child


def test_a_child_that_keeps_dying_makes_the_supervisor_give_up_with_the_reason() -> None:
    reasons: list[str] = []
    done = threading.Event()

    def give_up(reason: str) -> None:
        reasons.append(reason)
        done.set()

    supervisor = Supervisor(
        "crasher",
        lambda: python("raise SystemExit(3)"),
        give_up,
        max_restarts=2,
        first_delay=0.01,
        max_delay=0.02,
    )
    supervisor.begin()
    try:
        assert done.wait(20)
    finally:
        supervisor.stop()
    assert supervisor.restarts == 2
    assert "crasher exited 3 times" in reasons[0]
    assert "last exit status 3" in reasons[0]
