"""Bare Dramatiq: a plain ``RedisBroker`` with Dramatiq's default middleware and two actors.

Run by the stock command: ``dramatiq actors_dramatiq --processes P --threads T``. The broker URL
comes from ``BENCH_BROKER_URL``.
"""

from __future__ import annotations

import os

import dramatiq
import probe
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BENCH_BROKER_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default")
def bench_noop(mark: int = 0) -> None:
    """A no-op message: one completion count."""
    probe.noop(mark)


@dramatiq.actor(queue_name="default")
def bench_pickup(sent_at: float) -> None:
    """Record the pickup latency of a message sent at ``sent_at``."""
    probe.pickup(sent_at)
