"""Structured logs: one JSON object a line (console lines for ``callboard dev``).

Every record carries an ``event`` from a small fixed vocabulary (``message.retried``,
``message.dead``, ``worker.recycled``, ...) and, inside a worker thread, the running message's
``message_id``, ``actor``, ``queue``, ``attempt`` and ``request_id`` (set by
:class:`service.middleware.context.MessageContext`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.broker import MessageProxy

from config.settings import Settings
from service.redaction import Redactor, sensitive_values

#: The context of the message the current thread is running, if any.
_context = threading.local()

CONTEXT_FIELDS = ("message_id", "actor", "queue", "attempt", "request_id")


def set_message_context(fields: dict[str, Any] | None) -> None:
    """Attach ``fields`` (see ``CONTEXT_FIELDS``) to every record this thread logs; ``None`` clears."""
    _context.fields = fields


def message_context() -> dict[str, Any] | None:
    """The fields set by :func:`set_message_context` on this thread, or ``None``."""
    return getattr(_context, "fields", None)


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` when ``level`` is enabled."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"event": event, "fields": fields})


def _context_fields() -> dict[str, Any]:
    context = message_context()
    if not context:
        return {}
    return {key: context[key] for key in CONTEXT_FIELDS if key in context}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, message, context and fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "msg": record.getMessage(),
            "pid": record.process,
        }
        entry.update(_context_fields())
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    """Readable single lines for a terminal: time, level, event and ``key=value`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _context_fields()
        fields.update(getattr(record, "fields", {}))
        pairs = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        event = getattr(record, "event", None)
        text = event if event else record.getMessage()
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} {text}"
        if pairs:
            line += f"  {pairs}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


class MessageRedactingFilter(logging.Filter):
    """Keep message arguments out of log lines.

    Dramatiq logs whole messages (``Failed to process message send_welcome('ann@example.com')``,
    skipped messages) and their tracebacks, whose exception text may repeat an argument. A record
    carrying a message gets ``actor(message id)`` instead, and its traceback has the values of the
    actor's sensitive arguments (``CALLBOARD_SENSITIVE_FIELDS``) replaced by ``[redacted]``.

    Any record written while a message runs (an actor's own ``logger.info("sent to %s", email)``
    included) has the values of that message's sensitive arguments replaced in its text, fields
    and traceback; they are worked out once per message, on its first record.
    """

    def __init__(self, sensitive_fields: list[str]) -> None:
        super().__init__()
        self.redactor = Redactor(sensitive_fields)

    def filter(self, record: logging.LogRecord) -> bool:
        context = message_context()
        if context is not None and "message" in context:
            self._scrub_running(record, context)
        if not isinstance(record.args, tuple) or not any(_is_message(arg) for arg in record.args):
            return True
        values: list[str] = []
        safe_args: list[object] = []
        for arg in record.args:
            if isinstance(arg, Message | MessageProxy):
                values += _sensitive_values_of(self.redactor, arg)
                safe_args.append(f"{arg.actor_name}({arg.message_id})")
            else:
                safe_args.append(arg)
        record.args = tuple(safe_args)
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = Redactor.scrub(text, values)
            record.exc_info = None
        return True

    def _scrub_running(self, record: logging.LogRecord, context: dict[str, Any]) -> None:
        values = context.get("sensitive")
        if values is None:
            values = context["sensitive"] = _sensitive_values_of(self.redactor, context["message"])
        if not values:
            return
        if record.args and not any(_is_message(arg) for arg in (record.args or ())):
            record.msg, record.args = record.getMessage(), None
        if isinstance(record.msg, str):
            record.msg = Redactor.scrub(record.msg, values)
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {
                key: Redactor.scrub(value, values) if isinstance(value, str) else value
                for key, value in fields.items()
            }
        if record.exc_info:
            record.exc_text = Redactor.scrub(logging.Formatter().formatException(record.exc_info), values)
            record.exc_info = None


def _is_message(value: object) -> bool:
    return isinstance(value, Message | MessageProxy)


def _sensitive_values_of(redactor: Redactor, message: Any) -> list[str]:
    try:
        fn = dramatiq.get_broker().get_actor(message.actor_name).fn
    except Exception:  # unknown actor: keyword names can still be judged
        fn = None
    return sensitive_values(redactor, fn, message.args, message.kwargs)


def configure_logging(settings: Settings) -> None:
    """Send all logs to stderr in ``CALLBOARD_LOG_FORMAT`` at ``CALLBOARD_LOG_LEVEL``; idempotent.

    Records that carry a message are redacted (:class:`MessageRedactingFilter`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else ConsoleFormatter())
    handler.addFilter(MessageRedactingFilter(settings.sensitive_fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # pika logs every connection step, APScheduler every job run, at INFO.
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # httpx logs every request's URL at INFO: a webhook URL may hold a secret in its path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
