"""Actors of the dead-letter benchmark (``deadletters.py``), declared with Callboard's ``@actor``.

Loaded by ``callboard worker`` through ``CALLBOARD_ACTOR_MODULES=actors_deadletters``.
``bench_dead`` always fails and is never retried, so every message it gets is dead-lettered
(reason ``exhausted``); ``bench_warm`` is the warm-up no-op of :mod:`probe`.
"""

from __future__ import annotations

import probe

from service import actor


@actor(max_retries=0)
def bench_dead(n: int, note: str = "") -> None:
    """Fail at once: with no retries, every message ends in the dead-letter store."""
    raise ValueError(f"bench_dead {n} always fails")


@actor
def bench_warm(mark: int = 0) -> None:
    """A warm-up no-op that records its worker process (see :func:`probe.noop`)."""
    probe.noop(mark)
