"""What a worker accepts off a queue: a body's size, its JSON, its shape, its options, its queue.

Anyone who can write to the broker can put any bytes on a queue. Dramatiq trusts every body it
fetches: a body that does not decode, a field of the wrong type, an option of the wrong type or a
message that names a queue other than the one it sits on crashes a consumer or worker thread, or
is acked without running. These checks turn each of those into a rejection with a reason, which
the consumers and :class:`service.middleware.validation.Validation` dead-letter instead:

``oversized``
  the body is longer than ``CALLBOARD_MAX_MESSAGE_BYTES`` plus :data:`IN_FLIGHT_ALLOWANCE`
  (checked before anything is decoded).
``undecodable``
  not a Dramatiq message: not UTF-8 JSON, nested deeper than :data:`MAX_NESTING`, not an object,
  a missing or unknown field, a field of the wrong type or out of range. Such a body has no
  message id or actor that could be trusted, so it cannot be requeued.
``bad_options``
  an option that some middleware reads has a value of the wrong type or out of range
  (:func:`option_problem`). Options that nothing reads are ignored.
``wrong_queue``
  the message names a queue other than the one it was fetched from, or moves its actor to a
  queue that is served sooner than the actor's own (:func:`queue_problem`).

Bodies are parsed as JSON here, never through Dramatiq's pluggable encoder, so no body is ever
unpickled. This module imports nothing else of Callboard but the queue catalogue, so brokers,
middleware and the dead-letter store can all use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, ClassVar

from dramatiq import Message
from dramatiq.common import q_name

from config.queues import QUEUES

#: Deepest nesting of a message, its own object included: deeper than any real payload, and far
#: from Python's recursion limit (1,000 frames) for every walk over it (redaction, encoding).
MAX_NESTING = 64

#: Bytes a message may grow by on its way (broker id, retry count, last error, request id,
#: tracing headers): a worker accepts the producer's limit plus this, so that a message accepted
#: at send is never refused later.
IN_FLIGHT_ALLOWANCE = 16 * 1024

#: Longest message id, actor name and queue name: the dead-letter store's columns.
MAX_MESSAGE_ID = 64
MAX_NAME = 200

#: Longest idempotency key a message may carry (it is stored as a digest).
MAX_KEY = 1024

#: Largest retry count (a database integer, with room for the attempt that follows).
MAX_COUNT = 2**31 - 2

#: Latest timestamp, in ms since the epoch: the end of year 9999 (Python's datetime).
MAX_TIMESTAMP_MS = 253_402_300_799_999

#: Longest duration option, in ms (the largest integer a float holds exactly: ~285,000 years).
MAX_DURATION_MS = 2**53

_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")


class MessageRejected(Exception):
    """A body or message that will not run; ``str()`` is one line saying why.

    ``message`` is the decoded message when there is one (``bad_options``, ``wrong_queue``):
    it is dead-lettered with its id, actor and arguments, and can be requeued.
    """

    reason: ClassVar[str] = "undecodable"

    def __init__(self, error: str, message: Message[Any] | None = None) -> None:
        super().__init__(error)
        self.message = message


class Undecodable(MessageRejected):
    """The body is not a Dramatiq message."""

    reason = "undecodable"


class MessageTooLarge(MessageRejected):
    """The body is longer than the worker accepts."""

    reason = "oversized"


class BadOptions(MessageRejected):
    """An option that middleware reads has a value of the wrong type or out of range."""

    reason = "bad_options"


class WrongQueue(MessageRejected):
    """The message is on a queue that it or its actor may not use."""

    reason = "wrong_queue"


def receive_limit(max_message_bytes: int) -> int:
    """The longest body a worker accepts when producers may send ``max_message_bytes``."""
    return max_message_bytes + IN_FLIGHT_ALLOWANCE


def accept(body: bytes, queue_name: str, limit: int) -> Message[Any]:
    """The message in ``body``, fetched from ``queue_name``; raises :class:`MessageRejected`.

    Checks, in order: the size (before decoding), the JSON and the message's shape
    (:func:`decode`), that the message names ``queue_name``, and its options.
    """
    if len(body) > limit:
        raise MessageTooLarge(f"body of {len(body):,} bytes is over the limit of {limit:,} bytes")
    message = decode(body)
    if message.queue_name != queue_name:
        raise WrongQueue(
            f"message names queue {message.queue_name!r} but was on queue {queue_name!r}", message
        )
    problem = option_problem(message.options)
    if problem is not None:
        raise BadOptions(problem, message)
    return message


def decode(body: bytes | str) -> Message[Any]:
    """``body`` parsed as a JSON Dramatiq message of the right shape; raises :class:`Undecodable`.

    No size limit and no queue check: the dead-letter store reads bodies with this too.
    """
    size = len(body)
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        fields = json.loads(text)
    except RecursionError:
        raise Undecodable(f"body of {size} bytes is not a Dramatiq message: JSON nested too deeply") from None
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Undecodable(f"body of {size} bytes is not a Dramatiq message: {_cut(str(error))}") from None
    problem = shape_problem(fields)
    if problem is not None:
        raise Undecodable(f"body of {size} bytes is not a Dramatiq message: {problem}")
    return Message(
        queue_name=fields["queue_name"],
        actor_name=fields["actor_name"],
        args=tuple(fields["args"]),
        kwargs=fields["kwargs"],
        options=fields["options"],
        message_id=fields["message_id"],
        message_timestamp=fields["message_timestamp"],
    )


def shape_problem(fields: Any) -> str | None:
    """What makes decoded JSON ``fields`` not a Dramatiq message, or None if it is one."""
    if not isinstance(fields, dict):
        return f"a JSON {_json_type(fields)}, not an object"
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:  # Dramatiq's Message refuses them too
        return f"unknown field {_cut(unknown[0])!r}"
    for name, longest in (("queue_name", MAX_NAME), ("actor_name", MAX_NAME), ("message_id", MAX_MESSAGE_ID)):
        value = fields[name]
        if not isinstance(value, str) or not 0 < len(value) <= longest:
            return f"{name} must be a string of 1 to {longest} characters, not {_show(value)}"
    for name, kind in (("args", list), ("kwargs", dict), ("options", dict)):
        if not isinstance(fields[name], kind):
            expected = "an array" if kind is list else "an object"
            return f"{name} must be {expected}, not a JSON {_json_type(fields[name])}"
    timestamp = fields["message_timestamp"]
    if not _number(timestamp, 0, MAX_TIMESTAMP_MS):
        return f"message_timestamp must be milliseconds since the epoch, not {_show(timestamp)}"
    if _deeper_than(fields, MAX_NESTING):
        return f"nested deeper than {MAX_NESTING} levels"
    return None


def option_problem(options: dict[str, Any]) -> str | None:
    """What is wrong with the options that middleware reads, or None.

    Unset (absent or null) options are fine, and options that nothing reads are ignored: they are
    free-form, and only their share of the body's size limit bounds them.
    """
    for name, (valid, expected) in _OPTION_CHECKS.items():
        value = options.get(name)
        if value is not None and not valid(value):
            return f"option {name!r} must be {expected}, not {_show(value)}"
    return None


def queue_problem(actor_name: str, actor_queue: str, queue_name: str) -> str | None:
    """Why a message of ``actor_name`` (declared on ``actor_queue``) may not run from
    ``queue_name``, or None if it may.

    A message may run from its actor's queue or from any queue served no sooner: one whose
    catalogue priority is the same or lower (a larger number). Queues outside the catalogue come
    after every catalogue queue. So ``send(..., queue=...)`` can move work to a quieter queue, but
    no sender can put a report on ``critical`` and take the threads kept for urgent work.
    """
    queue, home = q_name(queue_name), q_name(actor_queue)
    if queue == home or _rank(queue) >= _rank(home):
        return None
    return (
        f"actor {actor_name!r} runs on queue {home!r}; a message may not move it to {queue!r}, "
        "which is served sooner"
    )


def nested_deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` has lists or dicts nested more than ``levels`` deep (``value`` is 1)."""
    return _deeper_than(value, levels)


def _rank(queue: str) -> float:
    spec = QUEUES.get(queue)
    return spec.priority if spec is not None else math.inf


def _deeper_than(value: Any, levels: int) -> bool:
    # Iterative: a recursive walk is what deep nesting is meant to break.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list | tuple):
            continue
        if depth > levels:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | tuple))
    return False


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: Any, low: float, high: float, *, above: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (value > low if above else value >= low) and value <= high


_Check = tuple[Callable[[Any], bool], str]

_COUNT: _Check = (lambda v: _whole(v, 0, MAX_COUNT), f"a whole number from 0 to {MAX_COUNT}")
_DURATION: _Check = (lambda v: _number(v, 0, MAX_DURATION_MS), "a number of milliseconds, 0 or more")
_LIMIT: _Check = (
    lambda v: _number(v, 0, MAX_DURATION_MS, above=True),
    "a number of milliseconds above 0",
)
_TIMESTAMP: _Check = (lambda v: _number(v, 0, MAX_TIMESTAMP_MS), "milliseconds since the epoch")
_FLAG: _Check = (lambda v: isinstance(v, bool), "true or false")
_TEXT: _Check = (lambda v: isinstance(v, str), "a string")
_OBJECT: _Check = (lambda v: isinstance(v, dict), "an object")
_MESSAGE: _Check = (lambda v: shape_problem(v) is None, "a message object")
_KEY: _Check = (
    lambda v: isinstance(v, str) and 0 < len(v) <= MAX_KEY,
    f"a string of 1 to {MAX_KEY} characters",
)
_ID: _Check = (
    lambda v: _whole(v, -(2**63), 2**63 - 1) or (isinstance(v, str) and 0 < len(v) <= MAX_NAME),
    f"a whole number or a string of 1 to {MAX_NAME} characters",
)
_SCOPE: _Check = (lambda v: v in ("global", "user", "tenant"), "'global', 'user' or 'tenant'")
_STORE: _Check = (lambda v: v in ("redis", "database"), "'redis' or 'database'")
#: Exception classes and functions cannot travel as JSON, so a message never legitimately has them.
_NEVER: _Check = (lambda v: False, "unset (only an actor can declare it)")

#: Every option that a consumer or middleware of the stack reads, with what it must be.
_OPTION_CHECKS: dict[str, _Check] = {
    "eta": _TIMESTAMP,  # Dramatiq's consumer thread
    "retries": _COUNT,
    "max_retries": _COUNT,
    "min_backoff": _DURATION,
    "max_backoff": _DURATION,
    "max_age": _DURATION,
    "time_limit": _LIMIT,
    "soft_time_limit": _LIMIT,
    "first_failed_at": _TIMESTAMP,
    "keep_expired": _FLAG,
    "notify_shutdown": _FLAG,
    "pipe_ignore": _FLAG,
    "request_id": _TEXT,
    "run_key": _TEXT,
    "run_id": _TEXT,
    "redis_message_id": _TEXT,
    "on_success": _TEXT,
    "on_failure": _TEXT,
    "pipe_target": _MESSAGE,
    "_sentry_headers": _OBJECT,  # Sentry's middleware, which runs before ours
    "idempotency_key": _KEY,  # the Idempotency middleware
    "idempotency_scope": _SCOPE,
    "idempotency_ttl": _LIMIT,
    "idempotency_store": _STORE,
    "callboard_claim": _TEXT,  # written by the producer's Idempotency middleware
    "user_id": _ID,
    "tenant_id": _ID,
    "store_results": _FLAG,  # ResultStorage
    "result_ttl": _LIMIT,
    "throws": _NEVER,
    "retry_when": _NEVER,
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A short, safe rendering of a value for a one-line error."""
    if isinstance(value, dict | list):
        return f"a JSON {_json_type(value)}"
    return _cut(repr(value))


def _cut(text: str, longest: int = 80) -> str:
    return text if len(text) <= longest else text[: longest - 1] + "…"
