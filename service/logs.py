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
        return line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send all logs to stderr in ``fmt`` (``json`` or ``console``) at ``level``; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Dramatiq logs every restart and skipped message at INFO/WARNING already; keep its debug quiet.
    logging.getLogger("pika").setLevel(logging.WARNING)
