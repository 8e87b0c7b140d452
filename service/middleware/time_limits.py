"""Soft and hard time limits, armed in every process that runs a worker.

Guarantees:
  * Past ``soft_time_limit`` the actor's thread gets :class:`SoftTimeLimitExceeded`, an ordinary
    ``Exception`` the actor may catch to clean up.
  * Past ``time_limit`` (hard) it gets :class:`HardTimeLimitExceeded`, a ``BaseException`` that
    ``except Exception`` does not swallow; it is raised again every second until the actor stops.
    The message then retries per policy, and dies with reason ``time_limit`` on its last attempt.
  * The monitor starts at worker boot (and, as a fallback, with the first message), not only in
    the ``dramatiq`` CLI's process-boot hook, so workers started from code have limits too.

Like any asynchronous exception in CPython, neither limit can interrupt C code or a blocking
system call: the exception lands when the thread next runs Python bytecode. Both are raised only
while the actor's own function is on the thread's stack: once the actor has returned or raised,
an exception landing in Dramatiq's handling of the attempt would kill the worker thread.

Options (message → actor → policy → default), in milliseconds:
  soft_time_limit(int): defaults to the ``default`` policy's 9 minutes.
  time_limit(int): defaults to 10 minutes.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from dataclasses import dataclass
from types import CodeType
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.middleware.threading import raise_thread_exception
from dramatiq.middleware.time_limit import TimeLimitExceeded

from config.policies import DEFAULT_POLICY
from service.logs import log_event
from service.metrics.definitions import TIME_LIMITS
from service.middleware.options import option

logger = logging.getLogger(__name__)

#: Seconds between a hard-limit exception and the next one, for actors that swallow it.
HARD_REPEAT = 1.0

#: Seconds past its hard limit after which a thread counts as stuck (in C code or a system call:
#: a thread running Python stops within a second of the hard-limit exception).
STUCK_GRACE = 10.0

#: Longest sleep of the monitor (it also wakes when a message with a nearer deadline starts).
IDLE_WAIT = 1.0


class SoftTimeLimitExceeded(Exception):
    """The actor ran past its soft time limit; catch it to clean up before the hard limit."""


class HardTimeLimitExceeded(TimeLimitExceeded):
    """The actor ran past its hard time limit and is being stopped."""


@dataclass(slots=True)
class _Deadlines:
    message_id: str
    actor: str
    queue: str
    soft_at: float
    hard_at: float
    soft_sent: bool = False
    hard_sent_at: float = 0.0
    hard_count: int = 0
    code: CodeType | None = None  # the actor function's code: limits are raised only inside it


def _next_due(entry: _Deadlines) -> float:
    if not entry.soft_sent and entry.soft_at < entry.hard_at:
        return entry.soft_at
    return max(entry.hard_at, entry.hard_sent_at + HARD_REPEAT)


def _running_code(thread_id: int, code: CodeType) -> bool:
    """Whether ``code`` is on the call stack of thread ``thread_id`` right now."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


class TimeLimits(Middleware):
    """Raise a soft, then a hard, time-limit exception in threads that run too long.

    The monitor sleeps until the nearest deadline (at most one second when idle), so it costs
    nothing between messages and fires within ``interval`` of a deadline.

    Parameters:
      interval(float): the shortest sleep between checks, in seconds. Defaults to 0.1.
    """

    def __init__(self, *, interval: float = 0.1) -> None:
        self.interval = interval
        self._deadlines: dict[int, _Deadlines] = {}
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._changed = threading.Event()
        self._next_wake = 0.0

    @property
    def actor_options(self) -> set[str]:
        return {"time_limit", "soft_time_limit"}

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._start()

    def before_process_message(self, broker: Broker, message: Any) -> None:
        if self._monitor is None:
            self._start()
        hard = option(broker, message, "time_limit", DEFAULT_POLICY.time_limit * 1000) / 1000
        soft = option(broker, message, "soft_time_limit", DEFAULT_POLICY.soft_time_limit * 1000) / 1000
        now = time.monotonic()
        entry = _Deadlines(
            message.message_id, message.actor_name, message.queue_name, now + min(soft, hard), now + hard
        )
        try:
            entry.code = broker.get_actor(message.actor_name).fn.__code__
        except Exception:  # no actor or no plain function: limits apply without the frame check
            entry.code = None
        with self._lock:
            self._deadlines[threading.get_ident()] = entry
        if entry.soft_at < self._next_wake:
            self._changed.set()  # the monitor sleeps past this deadline: let it recompute

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._deadlines.pop(threading.get_ident(), None)

    after_skip_message = after_process_message

    def running(self) -> collections.Counter[tuple[str, str]]:
        """How many threads run a message now, by ``(queue, actor)``."""
        with self._lock:
            return collections.Counter((entry.queue, entry.actor) for entry in self._deadlines.values())

    def stuck_threads(self, grace: float = STUCK_GRACE) -> int:
        """How many threads still run a message ``grace`` seconds past its hard limit."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for entry in self._deadlines.values() if now >= entry.hard_at + grace)

    def _start(self) -> None:
        with self._lock:
            if self._monitor is None:
                self._monitor = threading.Thread(
                    target=self._watch, name="callboard-time-limits", daemon=True
                )
                self._monitor.start()

    def _watch(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [_next_due(entry) for entry in self._deadlines.values()]
            self._next_wake = min(due, default=now + IDLE_WAIT)
            self._changed.wait(min(max(self._next_wake - now, self.interval), IDLE_WAIT))
            self._changed.clear()
            try:
                self._check(time.monotonic())
            except Exception:  # the monitor must outlive any one bad check
                logger.exception("time-limit check failed")

    def _check(self, now: float) -> None:
        with self._lock:
            for thread_id, entry in self._deadlines.items():
                if now >= entry.hard_at and now - entry.hard_sent_at >= HARD_REPEAT:
                    entry.hard_sent_at = now
                    entry.hard_count += 1
                    self._fire(thread_id, entry, "hard", HardTimeLimitExceeded)
                elif now >= entry.soft_at and not entry.soft_sent:
                    entry.soft_sent = True
                    self._fire(thread_id, entry, "soft", SoftTimeLimitExceeded)

    @staticmethod
    def _fire(thread_id: int, entry: _Deadlines, kind: str, exception: type[BaseException]) -> None:
        if entry.code is not None and not _running_code(thread_id, entry.code):
            # The actor has returned or raised: the thread is in Dramatiq's own handling of the
            # attempt (logging the failure, the after hooks). An exception landing there would
            # escape the worker loop and kill the thread, with its message never acked.
            return
        # Logged from the monitor thread, so the message's context is passed explicitly.
        log_event(
            logger,
            logging.WARNING,
            "message.time_limit",
            kind=kind,
            message_id=entry.message_id,
            actor=entry.actor,
            queue=entry.queue,
        )
        if kind == "soft" or entry.hard_count == 1:
            TIME_LIMITS.labels(entry.queue, entry.actor, kind).inc()  # once per limit, not per repeat
        raise_thread_exception(thread_id, exception)
