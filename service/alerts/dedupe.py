"""The alert dedupe store: one key per dedupe key in the shared-state Redis, set only if absent and
expiring after the window, so the first alert of a key within the window wins across every worker
process.

Keys: ``callboard:alerts:dedupe:<sha256 of the dedupe key, 32 hex>`` (hashed: a dedupe key is
free text of any length). The store fails open: when the shared-state Redis is missing or does not
answer, :func:`claim` says ``unavailable`` and the caller sends — a duplicate alert is better
than a lost one.
"""

from __future__ import annotations

import hashlib
import time
from typing import Literal

import redis

KEY_PREFIX = "callboard:alerts:dedupe:"

#: ``first``: this call owns the key for the window; ``repeat``: another call owns it;
#: ``unavailable``: no store (send anyway); ``off``: deduplication is disabled (window 0).
Claim = Literal["first", "repeat", "unavailable", "off"]


def normalise(text: str) -> str:
    """``text`` lower-cased with runs of whitespace collapsed to one space and the ends trimmed."""
    return " ".join(text.lower().split())


def dedupe_key(level: str, title: str, given: str | None = None) -> str:
    """The stable key of an alert: ``given`` when set, else ``<level>:<title>``; normalised."""
    return normalise(given) if given and given.strip() else f"{level}:{normalise(title)}"


def key_id(key: str) -> str:
    """A short, bounded id of ``key`` for logs and Redis key names (the hash, not the text)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def claim(client: redis.Redis | None, key: str, window: float) -> Claim:
    """Claim ``key`` for ``window`` seconds (SET NX PX). Never raises."""
    if window <= 0:
        return "off"
    if client is None:
        return "unavailable"
    try:
        won = client.set(KEY_PREFIX + key_id(key), str(time.time()), nx=True, px=max(int(window * 1000), 1))
    except (redis.RedisError, OSError):
        return "unavailable"
    return "first" if won else "repeat"


def release(client: redis.Redis | None, key: str) -> None:
    """Give ``key`` back (its alert could not be sent, so a retry must not be suppressed).
    Best effort: never raises."""
    if client is None:
        return
    try:
        client.delete(KEY_PREFIX + key_id(key))
    except (redis.RedisError, OSError):
        return
