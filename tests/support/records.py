"""Completions recorded by the test actors in Redis, read back by tests.

Actors in worker processes append JSON entries to lists named by the test's tag; tests read
them over their own connection. The record Redis is the test's own database, not the broker's
keyspace namespace, so recording survives broker faults injected through a proxy.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

RECORD_URL_VARIABLE = "CALLBOARD_TEST_RECORD_URL"

_client: redis.Redis | None = None


def client() -> redis.Redis:
    """The record connection of this process (from ``CALLBOARD_TEST_RECORD_URL``)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ[RECORD_URL_VARIABLE])
    return _client


def record(tag: str, what: str, **fields: Any) -> None:
    """Append ``what`` (with ``fields`` and the time) to the list of ``tag``."""
    entry = {"what": what, "at": time.time(), "pid": os.getpid(), **fields}
    client().rpush(f"record:{tag}", json.dumps(entry))


def entries(
    tag: str, what: str | None = None, *, connection: redis.Redis | None = None
) -> list[dict[str, Any]]:
    """Every entry recorded for ``tag`` (only ``what`` entries when given), oldest first."""
    raw = (connection or client()).lrange(f"record:{tag}", 0, -1)
    items = [json.loads(item) for item in raw]
    return [item for item in items if what is None or item["what"] == what]
