"""Heartbeats in the shared-state Redis: which worker processes and scheduler replicas are alive.

Each process publishes a :class:`Beat` every few seconds under its role (``workers`` every
``CALLBOARD_HEARTBEAT_INTERVAL``, ``schedulers`` every main-loop pass); one whose last beat is
older than ``CALLBOARD_HEARTBEAT_TIMEOUT`` is dead. Entries unseen for an hour are dropped by
the next publish, so the registry never grows with restarts.

Keys per role: ``callboard:<role>:seen`` (sorted set: id → last beat, Unix seconds) and
``callboard:<role>:info`` (hash: id → the beat as JSON).

:class:`Publisher` publishes from a thread of its own, for callers that must never wait on Redis.

``data`` by role — workers: ``queues`` (list, empty = all), ``threads``, ``busy``, ``stuck``;
schedulers: ``leader`` (bool), ``token``, ``entries``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis

from service.logs import log_event

Role = Literal["workers", "schedulers"]

logger = logging.getLogger(__name__)

#: At most one publishing error line per this many seconds.
LOG_EVERY = 60.0

#: Beats older than this are removed from the registry (seconds).
FORGET_AFTER = 3600.0

_PUBLISH = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(old) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
"""


def _keys(role: Role) -> tuple[str, str]:
    return f"callboard:{role}:seen", f"callboard:{role}:info"


def new_id() -> str:
    """A process id unique across hosts and restarts: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class Beat:
    """One process's heartbeat."""

    id: str
    data: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.time)


def publish(client: redis.Redis, role: Role, beat: Beat) -> None:
    """Record ``beat`` (its ``seen`` is set to now) and drop entries of ``role`` unseen for an hour."""
    beat.seen = time.time()
    seen, info = _keys(role)
    client.eval(
        _PUBLISH, 2, seen, info, beat.seen - FORGET_AFTER, beat.seen, beat.id, json.dumps(asdict(beat))
    )


def forget(client: redis.Redis, role: Role, beat_id: str) -> None:
    """Remove a process that stopped cleanly."""
    seen, info = _keys(role)
    pipe = client.pipeline(transaction=True)
    pipe.zrem(seen, beat_id)
    pipe.hdel(info, beat_id)
    pipe.execute()


def beats(client: redis.Redis, role: Role) -> list[Beat]:
    """Every process of ``role`` seen within the last hour, newest beat first."""
    found = []
    for value in client.hgetall(_keys(role)[1]).values():
        try:
            found.append(Beat(**json.loads(value)))
        except (TypeError, ValueError):
            continue  # written by another version: ignore it rather than fail health
    return sorted(found, key=lambda beat: beat.seen, reverse=True)


def live(found: list[Beat], timeout: float, now: float | None = None) -> list[Beat]:
    """The beats in ``found`` no older than ``timeout`` seconds."""
    now = time.time() if now is None else now
    return [beat for beat in found if now - beat.seen <= timeout]


class Publisher:
    """Publish a process's beats of ``role`` from a daemon thread of their own, newest beat only.

    The caller (the scheduler's main loop) hands a beat over and never waits for Redis, so a slow
    or black-holed Redis cannot delay it; beats offered while one is being published replace each
    other.
    Errors are logged at most once a minute. Without a shared-state Redis (RabbitMQ and no
    ``CALLBOARD_REDIS_URL``) nothing is published.
    """

    def __init__(self, client: redis.Redis | None, role: Role) -> None:
        self._client = client
        self._role: Role = role
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._pending: Beat | None = None
        self._leaving: str | None = None
        self._logged = -math.inf
        self._thread: threading.Thread | None = None

    def offer(self, beat: Beat) -> None:
        """Publish ``beat`` soon (instead of any beat not published yet)."""
        if self._client is None:
            return
        with self._lock:
            self._pending = beat
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"callboard-{self._role}-heartbeat", daemon=True
                )
                self._thread.start()
        self._ready.set()

    def close(self, beat_id: str, timeout: float = 2.0) -> None:
        """Drop unpublished beats and remove ``beat_id`` from the registry (a clean stop),
        waiting at most ``timeout`` seconds."""
        with self._lock:
            self._pending = None
            self._leaving = beat_id
            thread = self._thread
        if thread is None:
            return
        self._ready.set()
        self._closed.wait(timeout)

    def _run(self) -> None:
        assert self._client is not None
        client = self._client
        while True:
            self._ready.wait()
            self._ready.clear()
            with self._lock:
                beat, self._pending, leaving = self._pending, None, self._leaving
            try:
                if leaving is not None:
                    forget(client, self._role, leaving)
                elif beat is not None:
                    publish(client, self._role, beat)
            except Exception as error:  # redis errors, timeouts: the next beat tries again
                if time.monotonic() - self._logged >= LOG_EVERY:
                    self._logged = time.monotonic()
                    log_event(
                        logger,
                        logging.WARNING,
                        f"{self._role[:-1]}.heartbeat_failed",
                        error=f"{type(error).__name__}: {error}"[:300],
                    )
            if leaving is not None:
                self._closed.set()
                return
