"""What a status record holds and where it lives in Redis.

A record is one JSON string under ``callboard:status:<message id>``, rewritten whole by the worker
that runs the message (one ``SET ... PX`` a change), so a read is one ``GET``. A group's counters
are a hash under ``callboard:status:group:<group id>``.
"""

from __future__ import annotations

import functools
import json
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
    record: dict[str, Any] = {
        "message_id": message.message_id,
        "state": state,
        "actor": message.actor_name,
        # A worker takes messages from their queue; a delayed one is enqueued on ``<queue>.DQ``.
        "queue": message.queue_name if state == "started" else q_name(message.queue_name),
        "attempts": options.get("retries", 0) + (1 if state == "started" else 0),
        "updated_at": time.time(),
    }
    group_id = group_of(message)
    if group_id is not None:
        record["group_id"] = group_id
    return record


def group_of(message: Any) -> str | None:
    """The id of the :func:`service.workflows.group` ``message`` belongs to, if any."""
    group = getattr(message, "_message", message).options.get("callboard_group")
    return str(group["id"]) if isinstance(group, dict) and "id" in group else None


#: The JSON literal of a string: the C function behind ``json.dumps`` for one ``str``, without
#: the encoder object ``json.dumps`` builds around it.
_string = json.encoder.encode_basestring_ascii


@functools.lru_cache(maxsize=1024)
def _actor_fields(actor: str, queue: str) -> str:
    return f'"actor":{_string(actor)},"queue":{_string(queue)},'


def ended(message: Any, state: str, fields: dict[str, Any] | None = None, group_id: str | None = None) -> str:
    """The JSON text of ``message``'s record as its attempt ends in ``state`` (``succeeded``,
    ``retrying``, ...), with ``fields`` (``eta``, ``reason``, ``error``, ``progress``) and
    ``group_id`` (:func:`group_of`, which the caller needs as well) added.

    The attempt's number comes from the message's ``retries`` option, which a retry changes only
    in the copy it enqueues.

    The same record :func:`new_record` would give, updated; written out by hand because this
    runs for every message a worker finishes, where ``json.dumps`` of a dictionary cost more
    than the rest of the status tracking.
    """
    message = getattr(message, "_message", message)
    message_id = message.message_id
    attempts = message.options.get("retries", 0) + 1
    text = (
        f'{{"message_id":{_string(message_id)},"state":"{state}",'
        f"{_actor_fields(message.actor_name, message.queue_name)}"
        f'"attempts":{int(attempts)},"updated_at":{time.time():.3f}'
    )
    if group_id is not None:
        text += f',"group_id":{_string(group_id)}'
    if fields:
        text += "," + json.dumps(fields)[1:-1]
    return text + "}"


def readable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its epoch times as ISO 8601."""
    shown = dict(record)
    if isinstance(shown.get("updated_at"), int | float):
        shown["updated_at"] = iso(shown["updated_at"])
    if isinstance(shown.get("eta"), int | float):
        shown["eta"] = iso(shown["eta"] / 1000)
    return shown
