"""Heartbeats in the shared-state Redis: which worker processes and scheduler replicas are alive.

Each process publishes a :class:`Beat` every few seconds under its role (``workers`` every
``CALLBOARD_HEARTBEAT_INTERVAL``, ``schedulers`` every main-loop pass); one whose last beat is
older than ``CALLBOARD_HEARTBEAT_TIMEOUT`` is dead. Entries unseen for an hour are dropped by
the next publish, so the registry never grows with restarts.

Keys per role: ``callboard:<role>:seen`` (sorted set: id → last beat, Unix seconds) and
``callboard:<role>:info`` (hash: id → the beat as JSON).

``data`` by role — workers: ``queues`` (list, empty = all), ``threads``, ``busy``, ``stuck``;
schedulers: ``leader`` (bool), ``token``, ``entries``.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis

Role = Literal["workers", "schedulers"]

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
