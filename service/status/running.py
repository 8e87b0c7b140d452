"""The record of the message running in this context, and ``progress()`` for actors.

A worker thread (or, for an ``async def`` actor, the coroutine's task) holds the record of the
message it runs in a context variable, so ``progress()`` needs no arguments to find it.
"""

from __future__ import annotations

import contextvars
import math
import time
from dataclasses import dataclass, field
from typing import Any

import dramatiq

from service.redaction import Redactor, sensitive_values
from service.status.records import ended, new_record
from service.status.writer import StatusWriter

#: Longest progress note kept, in characters.
MAX_NOTE = 200


@dataclass(slots=True)
class Running:
    """The message running in this context: what its record needs beyond the message, and the
    writer that sends it. The ``started`` record itself is built only if a flush finds the
    attempt still running (:meth:`snapshot`): most messages end first and are written once."""

    message: Any
    writer: StatusWriter
    #: This attempt's number (taken at the start: a failure's retry count is raised before the
    #: attempt's end is recorded).
    attempts: int
    #: Redacts progress notes (the values of the message's sensitive arguments), when set.
    redactor: Redactor | None = None
    #: The latest ``progress()`` report, if any.
    progress: dict[str, Any] | None = None
    #: When the record last changed (the start, or the latest progress report).
    updated_at: float = field(default_factory=time.time)

    @property
    def message_id(self) -> str:
        """The running message's id."""
        return str(self.message.message_id)

    def snapshot(self) -> dict[str, Any]:
        """The record as it stands while the attempt runs: ``started``, with its progress."""
        record = new_record(self.message)
        record["attempts"] = self.attempts
        record["updated_at"] = self.updated_at
        if self.progress is not None:
            record["progress"] = dict(self.progress)
        return record

    def ended(self, state: str, fields: dict[str, Any] | None = None) -> str:
        """The JSON text of the record as the attempt ends in ``state`` with ``fields``."""
        if self.progress is not None:
            fields = {**(fields or {}), "progress": self.progress}
        return ended(self.message, state, self.attempts, fields)

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
    running.progress = report
    running.updated_at = time.time()
    running.writer.start(running)  # written by the next flush, if the attempt is still running
