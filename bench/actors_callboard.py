"""Callboard: the same two actors, declared with Callboard's ``@actor`` (policy ``default``).

``bench_noop`` takes an extra, unused ``seq`` that the idempotency benchmark varies.

Loaded by ``callboard worker`` through ``CALLBOARD_ACTOR_MODULES=actors_callboard``; the broker is
Callboard's own, built from ``CALLBOARD_BROKER_URL`` with the whole middleware stack.
"""

from __future__ import annotations

import os

import probe

from service import actor


# BENCH_IDEMPOTENCY=global turns idempotency keys on (bench/idempotency.py); ``seq`` only makes
# each message's arguments, and so its derived key, distinct. BENCH_STATUS=off turns status
# tracking off and BENCH_RESULTS=1 turns result storage on (bench/status.py).
@actor(
    idempotency_scope=os.environ.get("BENCH_IDEMPOTENCY") or None,
    track_status=os.environ.get("BENCH_STATUS") != "off",
    store_results=os.environ.get("BENCH_RESULTS") == "1",
)
def bench_noop(mark: int = 0, seq: int = 0) -> None:
    """A no-op message: one completion count."""
    probe.noop(mark)


@actor
def bench_pickup(sent_at: float) -> None:
    """Record the pickup latency of a message sent at ``sent_at``."""
    probe.pickup(sent_at)
