"""What a broker can tell about a queue right now (``callboard queues``, gauges, health)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's state at one moment. ``None`` means the broker cannot tell."""

    queue: str
    waiting: int  # ready to run, not fetched by any worker
    in_flight: int | None  # fetched by workers (running or prefetched), not yet acked
    delayed: int  # waiting for their eta (retries, delayed sends)
    oldest_age: float | None  # seconds since the oldest waiting message was enqueued
