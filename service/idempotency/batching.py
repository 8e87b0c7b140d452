"""Group commit: calls that several threads make at once go to Redis in one pipelined round trip.

The first thread to arrive sends its call at once (no added wait when the worker is quiet).
Threads that arrive while that round trip is under way queue up; when it returns, the first of
them sends everything queued, its own call included, and so on. Under load a round trip carries
as many calls as threads were waiting, so the cost per call falls as load rises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Call(Generic[T, R]):
    __slots__ = ("args", "done", "error", "lead", "result")

    def __init__(self, args: T) -> None:
        self.args = args
        self.done = threading.Lock()
        self.done.acquire()  # released when the result is in, or when this call must lead
        self.lead = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Run ``send(list of args) -> list of results`` for calls of many threads, batched.

    ``send`` raises to fail the whole batch: each caller then gets that exception.
    """

    def __init__(self, send: Callable[[Sequence[T]], Sequence[R]]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._queued: list[_Call[T, R]] = []
        self._busy = False

    def call(self, args: T) -> R:
        """The result of ``args``, sent alone or with the calls of other threads."""
        mine: _Call[T, R] = _Call(args)
        with self._lock:
            self._queued.append(mine)
            lead, self._busy = not self._busy, True
        if not lead:
            mine.done.acquire()
            if not mine.lead:
                return _outcome(mine)
        with self._lock:
            batch, self._queued = self._queued, []
        try:
            results = self._send([each.args for each in batch])
        except BaseException as error:  # handed to every caller, raised below
            for each in batch:
                each.error = error
        else:
            for each, result in zip(batch, results, strict=True):
                each.result = result
        for each in batch:
            if each is not mine:
                each.done.release()
        with self._lock:
            if self._queued:
                following = self._queued[0]
                following.lead = True
                following.done.release()
            else:
                self._busy = False
        return _outcome(mine)


def _outcome(call: _Call[T, R]) -> R:
    if call.error is not None:
        raise call.error
    return call.result  # type: ignore[return-value]
