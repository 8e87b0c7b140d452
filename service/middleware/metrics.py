"""Metrics: count every attempt by outcome, time it, and measure how long it waited.

Guarantees:
  * Each attempt a worker takes is counted exactly once in ``callboard_messages_total`` with its
    outcome (see :mod:`service.middleware.outcomes`); it sits before ``Retries`` in the stack so
    its ``after`` hooks see Retries' decision.
  * ``callboard_queue_wait_seconds`` measures from enqueue, or from the due time of a delayed
    message or retry, to start (Dramatiq's Prometheus middleware counts a retry's backoff as
    waiting).
  * Per message it adds three values (wait, duration, outcome) to the process's
    :class:`~service.metrics.buffer.MetricBuffer`, written through once a second and when the
    worker stops; what is running now (``callboard_messages_inprogress``,
    ``callboard_worker_threads_busy``) is sampled once a second by the worker's heartbeat thread
    instead of counted up and down per message.
  * Label values are bounded: a message naming an actor this worker does not know is counted
    under ``actor="unknown"``.
  * Dead letters are counted once, by the process whose mover stored them
    (``callboard_dead_letters_total{queue,actor,reason}``).
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq import Broker, Middleware

from service.deadletters.hooks import on_dead_lettered
from service.metrics import definitions as m
from service.metrics.buffer import PROCESS_BUFFER, MetricBuffer
from service.middleware.outcomes import processed_outcome, skipped_outcome

_STARTED = "_callboard_started"


def actor_label(broker: Broker, name: str | None) -> str:
    """``name`` if ``broker`` declares that actor, else ``"unknown"`` (labels stay bounded)."""
    return name if name is not None and name in broker.actors else "unknown"


def _waited(message: Any, now_ms: float) -> float:
    due = message.options.get("eta") or message.message_timestamp
    return max(now_ms - due, 0.0) / 1000


class Metrics(Middleware):
    """Count, time and measure the wait of every message this worker takes.

    Parameters:
      buffer(MetricBuffer): where the per-message values go until flushed. Defaults to the
        process's buffer, which the worker's heartbeat flushes every second.
    """

    def __init__(self, buffer: MetricBuffer = PROCESS_BUFFER) -> None:
        self.buffer = buffer
        # Labelled children by label values: ``labels()`` costs as much as the write itself.
        self._waits: dict[str, Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._outcomes: dict[tuple[str, str, str], Any] = {}

    def before_process_message(self, broker: Broker, message: Any) -> None:
        queue = message.queue_name
        wait = self._waits.get(queue) or self._waits.setdefault(queue, m.QUEUE_WAIT.labels(queue))
        self.buffer.observe(wait, _waited(message, time.time() * 1000))
        message.__dict__[_STARTED] = time.perf_counter()

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        key = (message.queue_name, actor_label(broker, message.actor_name))
        started = message.__dict__.pop(_STARTED, None)
        if started is not None:
            duration = self._durations.get(key) or self._durations.setdefault(key, m.DURATION.labels(*key))
            self.buffer.observe(duration, time.perf_counter() - started)
        self._count(key, processed_outcome(message, exception))

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        message.__dict__.pop(_STARTED, None)
        self._count((message.queue_name, actor_label(broker, message.actor_name)), skipped_outcome(message))

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.buffer.flush()

    def _count(self, key: tuple[str, str], outcome: str) -> None:
        labels = (*key, outcome)
        counter = self._outcomes.get(labels) or self._outcomes.setdefault(labels, m.MESSAGES.labels(*labels))
        self.buffer.inc(counter)


@on_dead_lettered
def _count_dead_letter(queue: str, actor: str | None, reason: str) -> None:
    m.DEAD_LETTERS_STORED.labels(queue, actor_label(dramatiq.get_broker(), actor), reason).inc()
