"""Actors used by the integration and acceptance tests (loaded with CALLBOARD_ACTOR_MODULES).

Queue names carry ``CALLBOARD_TEST_QUEUE_PREFIX`` so a test run never touches another run's
queues on a shared RabbitMQ. Every actor records what happened under the caller's ``tag``.
"""

from __future__ import annotations

import logging
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
def tb_record(tag: str, n: int = 0) -> None:
    """Record ``done``."""
    record(tag, "done", n=n)


@actor(queue_name=QUEUE, max_retries=3, **FAST)
def tb_fail(tag: str) -> None:
    """Record the attempt and fail with ValueError, every time."""
    record(tag, "attempt")
    raise ValueError("tb_fail always fails")


@actor(queue_name=QUEUE, throws=(KeyError,), max_retries=5, **FAST)
def tb_throws(tag: str) -> None:
    """Record the attempt and raise a non-retryable KeyError."""
    record(tag, "attempt")
    raise KeyError("not retryable")


@actor(queue_name=QUEUE, soft_time_limit=0.5, time_limit=10, max_retries=0)
def tb_soft(tag: str) -> None:
    """Work until the soft limit, then clean up and return normally."""
    record(tag, "started")
    try:
        while True:
            time.sleep(0.02)
    except SoftTimeLimitExceeded:
        record(tag, "cleanup")


@actor(queue_name=QUEUE, soft_time_limit=0.3, time_limit=1.5, max_retries=0)
def tb_stubborn(tag: str) -> None:
    """Ignore the soft limit (and any Exception) forever; only the hard limit stops it."""
    record(tag, "started")
    try:
        while True:
            try:
                time.sleep(0.02)
            except Exception:
                record(tag, "ignored")
    except HardTimeLimitExceeded:
        record(tag, "stopped")
        raise


@actor(queue_name=QUEUE, max_retries=0, soft_time_limit=600, time_limit=600)
def tb_slow(tag: str, seconds: float) -> None:
    """Record ``started``, work ``seconds`` in small steps, record ``done``."""
    record(tag, "started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.02)
    record(tag, "done")


@actor(queue_name=QUEUE, max_retries=3, **FAST)
def tb_wait_then_fail_once(tag: str) -> None:
    """First run: record ``started`` and wait for the test's ``go`` key, then fail. Later runs
    record ``done``. Lets a test cut the broker between the actor's start and its retry."""
    runs = client().incr(f"runs:{tag}")
    if runs > 1:
        record(tag, "done", runs=runs)
        return
    record(tag, "started")
    deadline = time.monotonic() + 60
    while not client().exists(f"go:{tag}") and time.monotonic() < deadline:
        time.sleep(0.02)
    raise ValueError("failing while the broker is unreachable")


@actor(queue_name=QUEUE, max_retries=0)
def tb_fixable(tag: str) -> None:
    """Fail until the test sets the ``fixed`` key (the cause is fixed), then record ``done``."""
    if not client().exists(f"fixed:{tag}"):
        raise RuntimeError("not fixed yet")
    record(tag, "done")


@actor(queue_name=QUEUE, max_retries=0)
def tb_secret(tag: str, email: str, password: str = "") -> None:
    """Fail with the secrets in the message, until fixed; then record a digest of what it got."""
    if not client().exists(f"fixed:{tag}"):
        raise ValueError(f"cannot mail {email} with {password}")
    record(tag, "done", received=f"{email}|{password}")


@actor(queue_name=QUEUE, max_retries=0)
def tb_alert(actor: str, queue: str, reason: str, count: int, dead_letter_id: int) -> None:
    """The dead-letter alert actor of the tests: record each alert."""
    record("alerts", "alert", actor=actor, count=count, reason=reason)


@actor(queue_name=QUEUE, max_retries=0)
def tb_log_secret(tag: str, api_token: str) -> None:
    """Log the secret argument the careless way (positional %s and in an exception), then record."""
    log = logging.getLogger("tests.careless")
    log.warning("calling the API with %s", api_token)
    try:
        raise RuntimeError(f"refused token {api_token}")
    except RuntimeError:
        log.exception("call failed")
    record(tag, "done")


@actor(queue_name=QUEUE, soft_time_limit=0.5, time_limit=1, max_retries=0)
def tb_blocked(tag: str, seconds: float) -> None:
    """Block in one C call (``time.sleep``) that no time-limit exception can interrupt."""
    record(tag, "started")
    time.sleep(seconds)
    record(tag, "returned")
