"""The message running in this context, and ``progress()`` for actors.

Status tracking keeps nothing per message while it runs (:mod:`service.middleware.status`); a
message gets state here only when its actor reports progress. ``progress()`` finds the message
through the status middleware of the process (:func:`register`), which knows the message each
worker thread runs, or, inside an ``async def`` actor, through the context variable that
:mod:`service.aio` sets in the coroutine's task.
"""

from __future__ import annotations

import contextvars
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import dramatiq

from service.redaction import Redactor, sensitive_values
from service.status.records import new_record
from service.status.writer import StatusWriter

#: Longest progress note kept, in characters.
MAX_NOTE = 200

#: Where a message's :class:`Progress` is kept (on the worker's message proxy).
PROGRESS = "_callboard_progress"


@dataclass(slots=True)
class Progress:
    """A running message that reported progress: its latest report, for the writer's flushes
    (:meth:`snapshot`) and for the record of how the attempt ended."""

    message: Any
    message_id: str
    writer: StatusWriter
    #: Redacts progress notes (the values of the message's sensitive arguments), when set.
    redactor: Redactor | None
    #: When the latest report was made.
    updated_at: float
    report: dict[str, Any]

    def snapshot(self) -> dict[str, Any]:
        """The record as it stands while the attempt runs: ``started``, with its progress."""
        record = new_record(self.message)
        record["updated_at"] = self.updated_at
        record["progress"] = dict(self.report)
        return record

    def scrub(self, text: str) -> str:
        """``text`` with the values of the message's sensitive arguments redacted."""
        if self.redactor is None or not text:
            return text
        actors = dramatiq.get_broker().actors
        fn = actors[self.message.actor_name].fn if self.message.actor_name in actors else None
        values = sensitive_values(self.redactor, fn, self.message.args, self.message.kwargs)
        return Redactor.scrub(text, values) or ""


class Tracker(Protocol):
    """The status middleware of a worker process, as :func:`progress` uses it."""

    writer: StatusWriter | None
    redactor: Redactor

    def current_message(self) -> Any | None:
        """The message the calling worker thread runs, if any."""

    def tracks(self, message: Any) -> bool:
        """Whether ``message``'s status is recorded."""


_trackers: weakref.WeakSet[Any] = weakref.WeakSet()

#: Set only in an ``async def`` actor's task (by :func:`service.aio.sync_actor_fn`): the message
#: it runs and its tracker, found in the worker thread that started the task.
_TASK: contextvars.ContextVar[tuple[Any, Tracker] | None] = contextvars.ContextVar(
    "callboard_status_task", default=None
)


def register(tracker: Tracker) -> None:
    """Let :func:`progress` find the messages ``tracker`` sees running (at worker boot)."""
    _trackers.add(tracker)


def running_message() -> tuple[Any, Tracker] | None:
    """The message running in this context and its tracker, or ``None`` outside an actor."""
    task = _TASK.get()
    if task is not None:
        return task
    for tracker in list(_trackers):
        message = tracker.current_message()
        if message is not None:
            return message, tracker
    return None


def enter(found: tuple[Any, Tracker] | None) -> None:
    """Make ``found`` (from :func:`running_message` in the worker thread) the running message of this
    context: an ``async def`` actor's task, which runs in the event loop's thread."""
    _TASK.set(found)


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
    found = running_message()
    if found is None:
        return
    message, tracker = found
    state: Progress | None = message.__dict__.get(PROGRESS)
    if state is None:
        if tracker.writer is None or not tracker.tracks(message):
            return
        state = Progress(message, message.message_id, tracker.writer, tracker.redactor, 0.0, {})
        message.__dict__[PROGRESS] = state
    report: dict[str, Any] = {"current": current, "total": total}
    if note is not None:
        text = str(note).splitlines()[0][:MAX_NOTE] if note else ""
        report["note"] = state.scrub(text)
    state.report = report
    state.updated_at = time.time()
    state.writer.report(state)  # written by the next flush, if the attempt is still running
