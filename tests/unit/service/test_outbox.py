"""The outbox sends a whole backlog in one sweep, and stops when the broker takes nothing."""

from __future__ import annotations

from collections.abc import Sequence

from pacifica.dispatcher.service.outbox import Outbox
from pacifica.dispatcher.storage.statements import SWEEP_BATCH


def backlog(size: int) -> Outbox[int]:
    """An outbox over ``size`` stranded rows that hands them out a batch at a time."""
    waiting = list(range(size))
    marked: list[int] = []

    def stranded(grace: float) -> list[int]:
        batch = waiting[:SWEEP_BATCH]
        del waiting[:SWEEP_BATCH]
        return batch

    def mark(keys: Sequence[int]) -> None:
        marked.extend(keys)

    return Outbox("test", lambda keys, delay: keys, mark, stranded)


def test_a_backlog_of_several_batches_goes_out_in_one_sweep() -> None:
    outbox = backlog(2 * SWEEP_BATCH + 3)
    assert len(outbox.sweep(0)) == 2 * SWEEP_BATCH + 3


def test_a_sweep_stops_when_the_broker_takes_nothing() -> None:
    calls: list[int] = []

    def stranded(grace: float) -> list[int]:
        calls.append(1)
        return list(range(SWEEP_BATCH))

    outbox: Outbox[int] = Outbox("test", lambda keys, delay: [], lambda keys: None, stranded)
    assert outbox.sweep(0) == []
    assert len(calls) == 1
