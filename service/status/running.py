"""The message running in this context, and ``progress()`` for actors.

A worker thread (or, for an ``async def`` actor, the coroutine's task) holds the message it runs
in a context variable, so ``progress()`` needs no arguments to find it.
"""

from __future__ import annotations

import contextvars
import math
import time
from dataclasses import dataclass
from typing import Any

import dramatiq

from service.redaction import Redactor, sensitive_values
from service.status.records import new_record
from service.status.writer import StatusWriter

#: Longest progress note kept, in characters.
MAX_NOTE = 200


@dataclass(slots=True)
class Running:
    """The message running in this context and the writer that records it.

    All that status tracking keeps per message while it runs: the ``started`` record is built
    only if a flush finds the attempt still running (:meth:`snapshot`); most messages end first
    and are written once, by :func:`service.status.records.ended`.
    """

    message: Any
    #: The message's id (read once: the writer keys its records by it).
    message_id: str
    writer: StatusWriter
    #: Redacts progress notes (the values of the message's sensitive arguments), when set.
    redactor: Redactor | None
    #: When the record last changed (the start, then the latest progress report).
    updated_at: float
    #: The latest ``progress()`` report, if any.
    progress: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        """The record as it stands while the attempt runs: ``started``, with its progress."""
        record = new_record(self.message)
        record["updated_at"] = self.updated_at
        if self.progress is not None:
            record["progress"] = dict(self.progress)
        return record

    def scrub(self, text: str) -> str:
        """``text`` with the values of the message's sensitive arguments redacted."""
        if self.redactor is None or not text:
            return text
        actors = dramatiq.get_broker().actors
        fn = actors[self.message.actor_name].fn if self.message.actor_name in actors else None
        values = sensitive_values(self.redactor, fn, self.message.args, self.message.kwargs)
        return Redactor.scrub(text, values) or ""


#: The running message's status in this context: ``None`` outside an actor (or with status off).
#: The status middleware sets and reads it directly, once each per message.
RUNNING: contextvars.ContextVar[Running | None] = contextvars.ContextVar("callboard_status", default=None)


def current() -> Running | None:
    """The running message's status, or ``None`` outside an actor (or with status off)."""
    return RUNNING.get()


def enter(running: Running | None) -> None:
    """Make ``running`` the current message of this context (until :func:`leave`)."""
    RUNNING.set(running)


def leave() -> None:
    """Forget the current message (a thread runs one message at a time)."""
    RUNNING.set(None)


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
    running = RUNNING.get()
    if running is None:
        return
    report: dict[str, Any] = {"current": current, "total": total}
    if note is not None:
        text = str(note).splitlines()[0][:MAX_NOTE] if note else ""
        report["note"] = running.scrub(text)
    running.progress = report
    running.updated_at = time.time()
    running.writer.start(running)  # written by the next flush, if the attempt is still running
