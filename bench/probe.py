"""What every benchmark actor runs, identical for Dramatiq, Callboard and Celery.

A completion is one ``INCR`` on ``bench:done`` in the system's own Redis database (one round
trip, the same for all three systems); a warm-up message also adds the worker's pid to
``bench:pids`` so the driver knows every worker process is consuming. A pickup message pushes
``start - sent_at`` (seconds) onto ``bench:latency``.

The Redis URL comes from ``BENCH_PROBE_URL``; each process opens its own client after fork.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import redis

DONE_KEY = "bench:done"
PIDS_KEY = "bench:pids"
LATENCY_KEY = "bench:latency"

_lock = threading.Lock()
_client: redis.Redis | None = None
_client_pid = 0


def client() -> redis.Redis:
    """This process's client for ``BENCH_PROBE_URL`` (a new one after a fork)."""
    global _client, _client_pid
    pid = os.getpid()
    if _client is None or _client_pid != pid:
        with _lock:
            if _client is None or _client_pid != pid:
                _client = redis.Redis.from_url(os.environ["BENCH_PROBE_URL"])
                _client_pid = pid
    return _client


def noop(mark: int = 0) -> None:
    """Count one completion; with ``mark``, also record this worker process as consuming."""
    if mark:
        client().sadd(PIDS_KEY, os.getpid())
    client().incr(DONE_KEY)


def pickup(sent_at: float) -> None:
    """Record the delay from ``sent_at`` (the producer's ``time.time()``) to now."""
    started = time.time()
    client().rpush(LATENCY_KEY, repr(started - sent_at))


def completions(connection: redis.Redis) -> int:
    """How many completions have been counted (driver side)."""
    return int(connection.get(DONE_KEY) or 0)


def reached(connection: redis.Redis, count: int) -> Callable[[], bool]:
    """A predicate for :func:`harness.wait_until`: at least ``count`` completions counted."""
    return lambda: completions(connection) >= count
