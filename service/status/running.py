"""The record of the message running in this context, and ``progress()`` for actors.

A worker thread (or, for an ``async def`` actor, the coroutine's task) holds the record of the
message it runs in a context variable, so ``progress()`` needs no arguments to find it.
"""

from __future__ import annotations

import contextvars
import math
import time
from dataclasses import dataclass
from typing import Any

import dramatiq

from service.redaction import Redactor, sensitive_values
from service.status.writer import StatusWriter

#: Longest progress note kept, in characters.
MAX_NOTE = 200


@dataclass(slots=True)
class Running:
    """The message running in this context: its record and the writer that sends it."""

    record: dict[str, Any]
    writer: StatusWriter
    message: Any
    #: Redacts progress notes (the values of the message's sensitive arguments), when set.
    redactor: Redactor | None = None

    def scrub(self, text: str) -> str:
        """``text`` with the values of the message's sensitive arguments redacted."""
        if self.redactor is None or not text:
            return text
        actors = dramatiq.get_broker().actors
        fn = actors[self.message.actor_name].fn if self.message.actor_name in actors else None
        values = sensitive_values(self.redactor, fn, self.message.args, self.message.kwargs)
        return Redactor.scrub(text, values) or ""


_running: contextvars.ContextVar[Running | None] = contextvars.ContextVar("callboard_status", default=None)


def current() -> Running | None:
    """The running message's status, or ``None`` outside an actor (or with status off)."""
    return _running.get()


def enter(running: Running | None) -> None:
    """Make ``running`` the current message of this context (until :func:`leave`)."""
    _running.set(running)


def leave() -> None:
    """Forget the current message (a thread runs one message at a time)."""
    _running.set(None)


def progress(current: float, total: float | None = None, note: str | None = None) -> None:
    """Report the running message's progress: ``current`` of ``total`` (``None``: unknown), with
    an optional one-line ``note``; ``callboard status`` shows the latest report.

    Safe to call in a tight loop: reports are kept in memory and written at most once per
    ``CALLBOARD_STATUS_FLUSH_INTERVAL`` per message. Outside an actor, or when the actor's status
    tracking is off, it does nothing. Raises ``ValueError`` for a negative or non-finite number.
    """
    for value in (current, total):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"progress must be a finite number >= 0 (got {value!r})")
    running = _running.get()
    if running is None:
        return
    report: dict[str, Any] = {"current": current, "total": total}
    if note is not None:
        text = str(note).splitlines()[0][:MAX_NOTE] if note else ""
        report["note"] = running.scrub(text)
    record = running.record
    record["progress"] = report
    record["updated_at"] = time.time()
    running.writer.put(record)
