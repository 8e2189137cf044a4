"""The embedded broker (kombu's filesystem transport, ours): consumers are woken, not left polling."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu.connection import Connection

from pacifica.dispatcher.service.broker import TRANSPORT, Doorbell, ring


def options(root: Path, polling_interval: float, doorbells: bool = True) -> dict[str, Any]:
    queue = root / "queue"
    queue.mkdir(exist_ok=True)
    found = {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "polling_interval": polling_interval,
    }
    if doorbells:
        found["wake_folder"] = str(root / "wake")
    return found


@pytest.fixture
def queue_name() -> str:
    """A queue name of this test's own: kombu keeps declared bindings process-wide, so a queue
    an earlier test declared would not be bound in this test's folder."""
    return f"events-{uuid.uuid4().hex}"


@pytest.fixture
def connections() -> Iterator[list[Any]]:
    """The kombu connections a test opened (closed after it)."""
    opened: list[Any] = []
    yield opened
    for connection in opened:
        connection.release()


def connect(opened: list[Any], transport_options: dict[str, Any]) -> Any:
    """A connection to the embedded broker in ``transport_options``'s folders (kombu: untyped)."""
    connection = Connection(transport=TRANSPORT, transport_options=dict(transport_options))  # type: ignore[no-untyped-call]
    opened.append(connection)
    return connection


def consume_one(
    connections: list[Any],
    transport_options: dict[str, Any],
    name: str,
    publish: threading.Thread,
) -> tuple[Any, float]:
    """Start consuming, let ``publish`` run, and return the first message's body and the wait."""
    queue = connect(connections, transport_options).SimpleQueue(name)
    started = time.monotonic()
    publish.start()
    message = queue.get(block=True, timeout=20)
    waited = time.monotonic() - started
    message.ack()
    publish.join(20)
    return message.payload, waited


def publisher(
    connections: list[Any], transport_options: dict[str, Any], name: str, ready: Any
) -> threading.Thread:
    """A thread that publishes ``{"n": 1}`` to the queue once ``ready()`` is true."""
    producer = connect(connections, transport_options)

    def run() -> None:
        deadline = time.monotonic() + 10
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.01)
        producer.SimpleQueue(name).put({"n": 1})

    return threading.Thread(target=run, daemon=True)


def test_an_idle_consumer_takes_a_new_message_at_once_not_at_its_next_poll(
    tmp_path: Path, connections: list[Any], queue_name: str
) -> None:
    transport_options = options(tmp_path, polling_interval=30.0)
    wake = tmp_path / "wake"

    def listening() -> bool:  # the consumer has looked at the empty queue and waits
        return wake.is_dir() and any(n.endswith(".doorbell") for n in os.listdir(wake))

    publish = publisher(connections, transport_options, queue_name, listening)
    payload, waited = consume_one(connections, transport_options, queue_name, publish)
    assert payload == {"n": 1}
    assert waited < 5, f"the consumer waited {waited:.1f} s: it slept through its poll"


def test_without_a_wake_folder_messages_still_arrive_by_polling(
    tmp_path: Path, connections: list[Any], queue_name: str
) -> None:
    transport_options = options(tmp_path, polling_interval=0.05, doorbells=False)
    publish = publisher(connections, transport_options, queue_name, lambda: True)
    payload, _ = consume_one(connections, transport_options, queue_name, publish)
    assert payload == {"n": 1}
    assert not (tmp_path / "wake").exists()


def test_ringing_removes_doorbells_nobody_listens_to_and_wakes_the_others(tmp_path: Path) -> None:
    wake = tmp_path / "wake"
    listening = Doorbell.install(str(wake))
    try:
        abandoned = wake / "4242-killed.doorbell"  # its process was killed -9: no reader
        os.mkfifo(abandoned)
        ring(str(wake))
        assert not abandoned.exists()
        started = time.monotonic()
        listening.wait(10)
        assert time.monotonic() - started < 5
    finally:
        listening.close()
    assert os.listdir(wake) == []
