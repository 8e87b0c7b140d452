"""What a status record holds and where it lives in Redis.

A record is one JSON string under ``callboard:status:<message id>``, rewritten whole by the worker
that runs the message (one ``SET ... PX`` a change), so a read is one ``GET``. A group's counters
are a hash under ``callboard:status:group:<group id>``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from dramatiq.common import q_name

PREFIX = "callboard:status:"
GROUP_PREFIX = "callboard:status:group:"

#: Every state, in the order a message can pass through them.
STATES = (
    "enqueued",  # in its queue (written by the producer, in the background)
    "delayed",  # due later: sent with a delay, or held back by an open circuit breaker
    "started",  # a worker runs it
    "retrying",  # an attempt failed; the next one is due at ``eta``
    "succeeded",
    "dead",  # failed for good (``reason``), in the dead-letter store
    "expired",  # older than its ``max_age`` when a worker got to it: not run
    "skipped",  # not run: a duplicate of an idempotency key held by another message
)

#: States after which the message does not run again (unless an operator requeues it).
TERMINAL_STATES = frozenset({"succeeded", "dead", "expired", "skipped"})

#: A message id or group id: what ``status`` accepts (uuid4 text, as Dramatiq makes them).
MAX_ID_LENGTH = 100


def key(message_id: str) -> str:
    """The Redis key of ``message_id``'s record."""
    return PREFIX + message_id


def group_key(group_id: str) -> str:
    """The Redis key of group ``group_id``'s counters."""
    return GROUP_PREFIX + group_id


def iso(epoch_seconds: float) -> str:
    """``epoch_seconds`` as ISO 8601 UTC with milliseconds."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


def new_record(message: Any, state: str = "started") -> dict[str, Any]:
    """The record of ``message`` as an attempt starts (or, with ``state``, as it is enqueued).

    Times are kept as epoch numbers (``updated_at`` in seconds, ``eta`` in milliseconds) and
    turned into ISO 8601 when read: formatting costs more than the rest of a write.
    """
    message = getattr(message, "_message", message)  # a worker's MessageProxy: skip its lookups
    options = message.options
    group = options.get("callboard_group")
    record: dict[str, Any] = {
        "message_id": message.message_id,
        "state": state,
        "actor": message.actor_name,
        # A worker takes messages from their queue; a delayed one is enqueued on ``<queue>.DQ``.
        "queue": message.queue_name if state == "started" else q_name(message.queue_name),
        "attempts": options.get("retries", 0) + (1 if state == "started" else 0),
        "updated_at": time.time(),
    }
    if isinstance(group, dict) and "id" in group:
        record["group_id"] = str(group["id"])
    return record


def readable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its epoch times as ISO 8601."""
    shown = dict(record)
    if isinstance(shown.get("updated_at"), int | float):
        shown["updated_at"] = iso(shown["updated_at"])
    if isinstance(shown.get("eta"), int | float):
        shown["eta"] = iso(shown["eta"] / 1000)
    return shown
