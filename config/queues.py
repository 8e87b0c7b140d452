"""The queue catalogue: every queue Callboard knows, with its priority, SLA and default concurrency.

The SLA is the longest acceptable wait from enqueue to start; it feeds metrics and alerts.
A lower ``priority`` number is served first by a worker that consumes several queues.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """One queue of the catalogue."""

    name: str
    priority: int
    sla_seconds: float
    concurrency: int


QUEUES: dict[str, QueueSpec] = {
    spec.name: spec
    for spec in (
        QueueSpec("critical", priority=0, sla_seconds=2, concurrency=8),
        QueueSpec("high_priority", priority=10, sla_seconds=3, concurrency=8),
        QueueSpec("email", priority=20, sla_seconds=5, concurrency=8),
        QueueSpec("external_api", priority=30, sla_seconds=10, concurrency=8),
        QueueSpec("default", priority=40, sla_seconds=30, concurrency=8),
        QueueSpec("reports", priority=50, sla_seconds=60, concurrency=2),
        QueueSpec("maintenance", priority=60, sla_seconds=300, concurrency=1),
    )
}


def get_queue(name: str) -> QueueSpec:
    """The catalogue entry for ``name``; raises ``KeyError`` naming the known queues when absent."""
    try:
        return QUEUES[name]
    except KeyError:
        raise KeyError(f"unknown queue {name!r} (known: {', '.join(QUEUES)})") from None
