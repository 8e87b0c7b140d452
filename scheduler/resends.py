"""Slots claimed but not yet sent: retried with backoff until their deadline.

A slot is claimed in the fire history before its message is sent (so two leaders never both
send it). When the send then fails (the broker is down), the slot waits here and the leader's
main loop tries again, backing off from :data:`FIRST_PAUSE` to :data:`LONGEST_PAUSE`, until the
send succeeds or the slot's deadline passes (its ``expires``: a message for it would be stale).
A new leader (takeover or restart) loads the claimed slots that have no message id into the same
list: the previous leader died between the claim and the send, or between the send and its
record, so the slot is sent again (at-least-once; its ``idempotency_key`` collapses a copy).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

#: Seconds before the first retry of a failed send, and the longest pause between retries.
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0


@dataclass(slots=True)
class Unsent:
    """One claimed slot waiting for its message."""

    entry: str
    slot: datetime
    deadline: datetime  # after this the slot is given up
    attempts: int = 0
    next_at: float = 0.0  # monotonic time of the next try
    pause: float = FIRST_PAUSE


class Resends:
    """The leader's list of :class:`Unsent` slots, keyed by (entry, slot). Thread-safe: the
    timers add to it, the main loop retries."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, datetime], Unsent] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, unsent: Unsent, *, at_once: bool = False) -> None:
        """Wait for ``unsent``'s next try (now if ``at_once``, else after its pause)."""
        key = (unsent.entry, unsent.slot)
        with self._lock:
            if key in self._slots and not at_once:
                unsent = self._slots[key]
            unsent.next_at = time.monotonic() + (0.0 if at_once else unsent.pause)
            self._slots[key] = unsent

    def due(self) -> list[Unsent]:
        """The slots whose next try is now, oldest slot first."""
        now = time.monotonic()
        with self._lock:
            return sorted((u for u in self._slots.values() if u.next_at <= now), key=lambda u: u.slot)

    def failed(self, unsent: Unsent) -> None:
        """Another try failed: wait twice as long (at most :data:`LONGEST_PAUSE`)."""
        with self._lock:
            unsent.attempts += 1
            unsent.pause = min(unsent.pause * 2, LONGEST_PAUSE)
            unsent.next_at = time.monotonic() + unsent.pause

    def done(self, unsent: Unsent) -> None:
        """``unsent`` was sent or given up: forget it."""
        with self._lock:
            self._slots.pop((unsent.entry, unsent.slot), None)

    def clear(self) -> None:
        """Forget every slot (leadership lost: the next leader loads them from the history)."""
        with self._lock:
            self._slots.clear()
