"""Metrics: count every attempt by outcome, time it, and measure how long it waited.

Guarantees:
  * Each attempt a worker takes is counted exactly once in ``callboard_messages_total`` with its
    outcome (see :mod:`service.middleware.outcomes`); it sits before ``Retries`` in the stack so
    its ``after`` hooks see Retries' decision.
  * ``callboard_queue_wait_seconds`` measures from enqueue, or from the due time of a delayed
    message or retry, to start (Dramatiq's Prometheus middleware counts a retry's backoff as
    waiting).
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
from service.middleware.outcomes import processed_outcome, skipped_outcome

_STARTED = "_callboard_started"


def actor_label(broker: Broker, name: str | None) -> str:
    """``name`` if ``broker`` declares that actor, else ``"unknown"`` (labels stay bounded)."""
    return name if name is not None and name in broker.actors else "unknown"


def _waited(message: Any, now_ms: float) -> float:
    due = message.options.get("eta") or message.message_timestamp
    return max(now_ms - due, 0.0) / 1000


class Metrics(Middleware):
    """Count, time and measure the wait of every message this worker takes."""

    def before_process_message(self, broker: Broker, message: Any) -> None:
        queue, actor = message.queue_name, actor_label(broker, message.actor_name)
        m.QUEUE_WAIT.labels(queue).observe(_waited(message, time.time() * 1000))
        m.IN_PROGRESS.labels(queue, actor).inc()
        m.WORKER_THREADS_BUSY.inc()
        message.__dict__[_STARTED] = time.perf_counter()

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        queue, actor = message.queue_name, actor_label(broker, message.actor_name)
        started = message.__dict__.pop(_STARTED, None)
        if started is not None:
            m.DURATION.labels(queue, actor).observe(time.perf_counter() - started)
            m.IN_PROGRESS.labels(queue, actor).dec()
            m.WORKER_THREADS_BUSY.dec()
        m.MESSAGES.labels(queue, actor, processed_outcome(message, exception)).inc()

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        queue, actor = message.queue_name, actor_label(broker, message.actor_name)
        if message.__dict__.pop(_STARTED, None) is not None:
            m.IN_PROGRESS.labels(queue, actor).dec()
            m.WORKER_THREADS_BUSY.dec()
        m.MESSAGES.labels(queue, actor, skipped_outcome(message)).inc()


@on_dead_lettered
def _count_dead_letter(queue: str, actor: str | None, reason: str) -> None:
    m.DEAD_LETTERS_STORED.labels(queue, actor_label(dramatiq.get_broker(), actor), reason).inc()
