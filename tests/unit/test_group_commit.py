"""GroupCommit: calls of many threads share round trips, each caller gets its own result or error."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from service.idempotency.batching import GroupCommit
from tests.support.waiting import wait_until


class Sender:
    """A ``send`` that records its batches; the first one waits until the test lets it go."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.go = threading.Event()
        self.fail = fail

    def __call__(self, batch: Sequence[int]) -> list[int]:
        if not self.batches:
            self.go.wait(10)
        self.batches.append(list(batch))
        if self.fail:
            raise ConnectionError("down")
        return [value * 10 for value in batch]


def run_threads(group: GroupCommit[int, int], values: range) -> dict[int, object]:
    """Start one caller per value: the first leads (held by its ``send``), the others queue up.
    Returns the outcomes by value, filled in as the calls return."""
    outcomes: dict[int, object] = {}

    def call(value: int) -> None:
        try:
            outcomes[value] = group.call(value)
        except ConnectionError as error:
            outcomes[value] = error

    threads = [threading.Thread(target=call, args=(value,)) for value in values]
    threads[0].start()
    wait_until(lambda: group._busy, timeout=10, message="the first call to lead")
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(group._queued) == len(threads) - 1, timeout=10, message="the others to queue")
    return outcomes


def test_calls_made_during_a_round_trip_share_the_next_one_and_get_their_own_results() -> None:
    sender = Sender()
    group: GroupCommit[int, int] = GroupCommit(sender)
    outcomes = run_threads(group, range(8))
    sender.go.set()
    wait_until(lambda: len(outcomes) == 8, timeout=10, message="every result")
    assert outcomes == {value: value * 10 for value in range(8)}
    assert sender.batches[0] == [0] and sorted(sender.batches[1]) == list(range(1, 8))
    assert not group._busy and not group._queued


def test_a_failed_round_trip_fails_every_call_in_it() -> None:
    sender = Sender(fail=True)
    group: GroupCommit[int, int] = GroupCommit(sender)
    outcomes = run_threads(group, range(4))
    sender.go.set()
    wait_until(lambda: len(outcomes) == 4, timeout=10, message="every outcome")
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes.values())
    with pytest.raises(ConnectionError):
        group.call(9)  # and the group is free again: the next call leads at once
