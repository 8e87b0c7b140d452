"""What the worker records when a message dies, and how a broker's dead entry becomes a row.

Worker side: middleware calls :func:`mark_dead` with the reason; the consumer's nack writes
:func:`dead_options` into the message body (option ``dead``) before it moves the message to the
broker's dead-letter queue, so the reason travels with the message and survives a database outage.

Store side: :func:`to_row` turns a broker entry (decodable or not) into a redacted row, with the
original arguments sealed for requeue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.errors import ActorNotFound

from config.settings import Settings
from service import intake
from service.logs import log_event
from service.redaction import Redactor
from service.sealing import seal

_ATTRIBUTE = "_callboard_death"

#: Longest exception message, traceback and undecodable body kept, in characters.
MAX_MESSAGE = 2_000
MAX_TRACEBACK = 20_000
MAX_RAW_BODY = 1_024

#: The key of the body that stands in the dead-letter queue for a body that is not a message.
_REJECTED = "callboard_rejected"

#: Exception type stored for a body that is not a message, by reason.
_BODY_ERRORS = {"undecodable": "DecodeError", "oversized": "MessageTooLarge"}


@dataclass(frozen=True, slots=True)
class Death:
    """Why a message stopped for good, as decided by the middleware that failed it."""

    reason: str
    exception: BaseException | None
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadEntry:
    """One message in a broker's dead-letter queue, as the broker hands it over."""

    ref: str  # the broker's handle: Redis message id, or a RabbitMQ delivery tag
    queue: str  # the canonical queue name
    body: bytes | None
    stable: bool = True  # whether ``ref`` identifies the entry across reads (Redis: yes)


@runtime_checkable
class DeadLetterSource(Protocol):
    """A broker that hands over its dead-letter queue's entries (ours for Redis and RabbitMQ)."""

    def fetch_dead(self, limit: int) -> list[DeadEntry]:
        """Up to ``limit`` entries, not yet removed from the broker."""

    def forget_dead(self, entries: list[DeadEntry]) -> None:
        """Remove entries that are stored."""

    def release_dead(self, entries: list[DeadEntry]) -> None:
        """Give back entries that could not be stored."""


def mark_dead(message: MessageProxy, reason: str, exception: BaseException | None, attempts: int) -> None:
    """Fail ``message`` for good with ``reason``; the consumer records it when it nacks."""
    message.fail()
    message.__dict__[_ATTRIBUTE] = Death(reason, exception, attempts)


def death_of(message: Any) -> Death | None:
    """Why :func:`mark_dead` failed ``message`` in this attempt, or ``None``."""
    death: Death | None = message.__dict__.get(_ATTRIBUTE)
    return death


def dead_options(message: MessageProxy) -> dict[str, Any]:
    """The ``dead`` option for a failed message: reason, exception, attempts and times (ms)."""
    death: Death | None = message.__dict__.get(_ATTRIBUTE)
    exception = death.exception if death else message._exception
    if death is not None:
        reason, attempts = death.reason, death.attempts
    elif isinstance(exception, ActorNotFound):
        reason, attempts = "unknown_actor", 0
    else:
        reason, attempts = "unknown", message.options.get("retries", 0) + 1
    now = int(time.time() * 1000)
    options: dict[str, Any] = {
        "reason": reason,
        "attempts": attempts,
        "first_failed_at": message.options.get("first_failed_at", now),
        "failed_at": now,
    }
    if exception is not None:
        options["exception_type"] = type(exception).__name__
        options["exception_message"] = str(exception)[:MAX_MESSAGE]
        options["traceback"] = "".join(traceback.format_exception(exception))[-MAX_TRACEBACK:]
    return options


def dead_body(message: MessageProxy) -> bytes:
    """The encoded message with its ``dead`` option, to store in the dead-letter queue."""
    return message._message.copy(options={"dead": dead_options(message)}).encode()


def log_rejected(logger: logging.Logger, queue: str, rejected: intake.MessageRejected, **fields: Any) -> None:
    """Log a body a consumer refused: ``message.undecodable`` (no message could be read) or
    ``message.rejected`` (with its message id), with the reason and the one-line error."""
    ids = {"message_id": rejected.message.message_id} if rejected.message is not None else {}
    log_event(
        logger,
        logging.ERROR,
        "message.undecodable" if rejected.reason == "undecodable" else "message.rejected",
        reason=rejected.reason,
        error=str(rejected),
        queue=queue,
        **fields,
        **ids,
    )


def rejected_body(body: bytes, rejected: intake.MessageRejected) -> bytes:
    """What a consumer puts in the dead-letter queue for ``body``, which it refused.

    A decoded message (``bad_options``, ``wrong_queue``) goes as a dead message with its reason,
    never run (0 attempts). A body that is not a message goes inside a small JSON object with its
    reason and error, cut to its first :data:`MAX_RAW_BODY` bytes when oversized, so a huge body
    never sits in the dead-letter queue; :func:`to_row` reads it back.
    """
    if rejected.message is not None:
        proxy = MessageProxy(rejected.message)
        mark_dead(proxy, rejected.reason, rejected, 0)
        return dead_body(proxy)
    kept = body[:MAX_RAW_BODY] if rejected.reason == "oversized" else body
    return json.dumps(
        {
            _REJECTED: {
                "reason": rejected.reason,
                "error": str(rejected),
                "bytes": len(body),
                "body": kept.decode("utf-8", errors="replace"),
            }
        }
    ).encode()


def _time(ms: Any) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000 if isinstance(ms, int | float) else time.time(), UTC)
    except (OverflowError, ValueError, OSError):  # a hostile timestamp
        return datetime.fromtimestamp(time.time(), UTC)


def to_row(entry: DeadEntry, broker: Broker, settings: Settings) -> dict[str, Any]:
    """The store row for ``entry``: redacted for reading, original arguments sealed."""
    now = datetime.now(UTC)
    if entry.body is None:
        return _undecodable_row(entry, settings, now)
    try:
        # Shape-checked JSON only: a wrong field type here would stop the mover for every entry.
        message = intake.decode(entry.body)
    except intake.MessageRejected:
        return _undecodable_row(entry, settings, now)
    options = dict(message.options)
    dead = options.pop("dead", None)
    dead = dead if isinstance(dead, dict) else {}
    retries = options.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= intake.MAX_COUNT:
        retries = 0  # a message dead for bad options; the key must stay short and unique
    redactor = Redactor(settings.sensitive_fields)
    try:
        fn = broker.get_actor(message.actor_name).fn
    except ActorNotFound:
        fn = None
    found: list[str] = []
    args, kwargs = redactor.redact_call(fn, message.args, message.kwargs, found)
    clean_options = redactor.redact(options, found)
    options_text = Redactor.scrub(json.dumps(clean_options, default=str), found)
    payload = {"args": list(message.args), "kwargs": message.kwargs, "options": options}
    sealed = seal(json.dumps(payload, default=str).encode(), settings)
    return _storable(
        {
            "dedupe_key": f"{message.message_id}:{retries}",
            "message_id": message.message_id,
            "queue": entry.queue,
            "actor": message.actor_name,
            "reason": dead.get("reason", "unknown"),
            "args": json.dumps(args, default=str),
            "kwargs": json.dumps(kwargs, default=str),
            "options": options_text,
            "sealed_payload": sealed,
            "raw_body": None,
            "exception_type": dead.get("exception_type"),
            "exception_message": Redactor.scrub(dead.get("exception_message"), found),
            "traceback": Redactor.scrub(dead.get("traceback"), found),
            "attempts": _attempts(dead.get("attempts"), retries + 1),
            "first_failed_at": _time(dead.get("first_failed_at")),
            "last_failed_at": _time(dead.get("failed_at")),
            "stored_at": now,
            "state": "dead",
            "requeue_count": 0,
        }
    )


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    # PostgreSQL text cannot hold NUL; garbage bodies and exception messages can.
    return {
        key: value.replace("\x00", "\\x00") if isinstance(value, str) else value for key, value in row.items()
    }


def minimal_row(row: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """``row`` without its free-text fields, for a row the database refused as it was."""
    kept = {
        key: row[key]
        for key in (
            "dedupe_key",
            "message_id",
            "queue",
            "actor",
            "reason",
            "attempts",
            "first_failed_at",
            "last_failed_at",
            "stored_at",
            "state",
            "requeue_count",
            "sealed_payload",
        )
    }
    return {
        **kept,
        "args": None,
        "kwargs": None,
        "options": None,
        "raw_body": None,
        "traceback": None,
        "exception_type": "Unstorable",
        "exception_message": f"the database refused this dead letter's details: {error}"[:MAX_MESSAGE],
    }


def _attempts(value: Any, default: int) -> int:
    return value if isinstance(value, int) and 0 <= value <= intake.MAX_COUNT + 1 else default


def _rejection(body: bytes) -> dict[str, Any] | None:
    """The contents of a :func:`rejected_body` object, or None for any other body."""
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):
        return None
    inner = found.get(_REJECTED) if isinstance(found, dict) and len(found) == 1 else None
    if isinstance(inner, dict) and inner.get("reason") in _BODY_ERRORS and isinstance(inner.get("body"), str):
        return inner
    return None


def _undecodable_row(entry: DeadEntry, settings: Settings, now: datetime) -> dict[str, Any]:
    body = entry.body or b""
    rejection = _rejection(body)
    if rejection is not None:  # refused by a consumer, which recorded why
        reason, error, raw = rejection["reason"], str(rejection.get("error")), rejection["body"]
    else:  # put in the dead-letter queue by something else (Dramatiq, an older version)
        reason, error = "undecodable", f"body of {len(body)} bytes is not a Dramatiq message"
        raw = body.decode("utf-8", errors="replace")
    redactor = Redactor(settings.sensitive_fields)
    try:  # JSON that is not a message may still carry sensitive keys
        text = json.dumps(redactor.redact(json.loads(raw)))[:MAX_RAW_BODY]
    except (ValueError, RecursionError):  # not JSON, cut short, or nested too deeply to walk
        text = redactor.redact_text(raw[:MAX_RAW_BODY])
    ref = entry.ref if entry.stable else uuid.uuid4().hex
    if len(ref) > 64:  # a hostile producer chose the Redis id; the key has 200 characters
        ref = hashlib.sha256(ref.encode()).hexdigest()
    return _storable(
        {
            "dedupe_key": f"undecodable:{entry.queue}:{ref}",
            "message_id": None,
            "queue": entry.queue,
            "actor": None,
            "reason": reason,
            "args": None,
            "kwargs": None,
            "options": None,
            "sealed_payload": None,
            "raw_body": text,
            "exception_type": _BODY_ERRORS[reason],
            "exception_message": error[:MAX_MESSAGE],
            "traceback": None,
            "attempts": 0,
            "first_failed_at": now,
            "last_failed_at": now,
            "stored_at": now,
            "state": "dead",
            "requeue_count": 0,
        }
    )
