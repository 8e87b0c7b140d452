"""Celery 5 on Redis: the same two tasks, default settings except what a benchmark must set.

Run by ``celery -A celery_app worker``; the broker URL comes from ``BENCH_CELERY_BROKER_URL``.
Results are ignored (no result backend), as Dramatiq and Callboard store none either.
"""

from __future__ import annotations

import os

import probe
from celery import Celery

QUEUE = "bench:celery"

app = Celery("bench", broker=os.environ["BENCH_CELERY_BROKER_URL"])
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench_noop")
def bench_noop(mark: int = 0) -> None:
    """A no-op message: one completion count."""
    probe.noop(mark)


@app.task(name="bench_pickup")
def bench_pickup(sent_at: float) -> None:
    """Record the pickup latency of a message sent at ``sent_at``."""
    probe.pickup(sent_at)
