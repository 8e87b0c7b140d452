"""Actors used by the integration and acceptance tests (loaded with CALLBOARD_ACTOR_MODULES).

Queue names carry ``CALLBOARD_TEST_QUEUE_PREFIX`` so a test run never touches another run's
queues on a shared RabbitMQ. Every actor records what happened under the caller's ``token``.
"""

from __future__ import annotations

import os
import time

from service import SoftTimeLimitExceeded, actor
from service.middleware.time_limits import HardTimeLimitExceeded
from tests.support.records import client, record

PREFIX = os.environ.get("CALLBOARD_TEST_QUEUE_PREFIX", "t")
QUEUE = f"{PREFIX}_work"

#: Fast retries so tests see several attempts within seconds.
FAST = {"min_backoff": 0.2, "max_backoff": 2.0}


@actor(queue_name=QUEUE, **FAST)
def tb_record(token: str, n: int = 0) -> None:
    """Record ``done``."""
    record(token, "done", n=n)


@actor(queue_name=QUEUE, max_retries=3, **FAST)
def tb_fail(token: str) -> None:
    """Record the attempt and fail with ValueError, every time."""
    record(token, "attempt")
    raise ValueError("tb_fail always fails")


@actor(queue_name=QUEUE, throws=(KeyError,), max_retries=5, **FAST)
def tb_throws(token: str) -> None:
    """Record the attempt and raise a non-retryable KeyError."""
    record(token, "attempt")
    raise KeyError("not retryable")


@actor(queue_name=QUEUE, soft_time_limit=0.5, time_limit=10, max_retries=0)
def tb_soft(token: str) -> None:
    """Work until the soft limit, then clean up and return normally."""
    record(token, "started")
    try:
        while True:
            time.sleep(0.02)
    except SoftTimeLimitExceeded:
        record(token, "cleanup")


@actor(queue_name=QUEUE, soft_time_limit=0.3, time_limit=1.5, max_retries=0)
def tb_stubborn(token: str) -> None:
    """Ignore the soft limit (and any Exception) forever; only the hard limit stops it."""
    record(token, "started")
    try:
        while True:
            try:
                time.sleep(0.02)
            except Exception:
                record(token, "ignored")
    except HardTimeLimitExceeded:
        record(token, "stopped")
        raise


@actor(queue_name=QUEUE, max_retries=0, soft_time_limit=600, time_limit=600)
def tb_slow(token: str, seconds: float) -> None:
    """Record ``started``, work ``seconds`` in small steps, record ``done``."""
    record(token, "started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    record(token, "done")


@actor(queue_name=QUEUE, max_retries=3, **FAST)
def tb_wait_then_fail_once(token: str) -> None:
    """First run: record ``started`` and wait for the test's ``go`` key, then fail. Later runs
    record ``done``. Lets a test cut the broker between the actor's start and its retry."""
    runs = client().incr(f"runs:{token}")
    if runs > 1:
        record(token, "done", runs=runs)
        return
    record(token, "started")
    deadline = time.monotonic() + 60
    while not client().exists(f"go:{token}") and time.monotonic() < deadline:
        time.sleep(0.02)
    raise ValueError("failing while the broker is unreachable")
