"""The mover: drains the broker's dead-letter queues into the store, in every worker process.

Guarantees:
  * A dead letter leaves the broker only after its row is committed; if the database is down the
    entry stays in the broker (Redis: untouched; RabbitMQ: given back) and the next pass retries.
  * Storing is idempotent (``dedupe_key``), so several movers, or a mover that died between
    commit and removal, never store one death twice.
  * A nack wakes the mover at once; otherwise it passes every ``CALLBOARD_DLQ_DRAIN_INTERVAL``.

Also moves anything Dramatiq itself put in ``<queue>.XQ`` before Callboard (reason ``unknown``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dramatiq import Broker, Middleware
from sqlalchemy.exc import DataError, IntegrityError

from config.settings import Settings, get_settings
from service.deadletters import hooks, store
from service.deadletters.alerts import send_alerts
from service.deadletters.capture import DeadLetterSource, minimal_row, to_row
from service.logs import log_event

logger = logging.getLogger(__name__)

#: Longest wait between passes after a failure (database or broker down).
MAX_BACKOFF = 60.0


def drain(broker: Broker, settings: Settings | None = None, batch_size: int = store.BATCH_SIZE) -> int:
    """Move every dead letter the broker holds into the store; returns how many were new.

    Raises if the store or the broker fails; entries not yet stored stay in the broker.
    """
    settings = settings or get_settings()
    if not isinstance(broker, DeadLetterSource):
        return 0
    moved = 0
    while True:
        entries = broker.fetch_dead(batch_size)
        if not entries:
            return moved
        try:
            stored = _store([to_row(entry, broker, settings) for entry in entries])
        except BaseException:
            broker.release_dead(entries)
            raise
        broker.forget_dead(entries)
        for dead in stored:
            log_event(
                logger,
                logging.WARNING,
                "dlq.stored",
                dead_letter_id=dead.id,
                queue=dead.queue,
                actor=dead.actor,
                reason=dead.reason,
            )
            hooks.emit_dead_lettered(dead.queue, dead.actor, dead.reason)
        send_alerts(stored, broker, settings)
        moved += len(stored)
        if len(entries) < batch_size:
            return moved


def _store(rows: list[dict[str, Any]]) -> list[store.Stored]:
    """Store ``rows``; a row the database refuses (not a connection failure) is stored without
    its free-text details rather than blocking every dead letter behind it."""
    try:
        return store.store_new(rows)
    except (DataError, IntegrityError, ValueError):
        stored: list[store.Stored] = []
        for row in rows:
            try:
                stored += store.store_new([row])
            except (DataError, IntegrityError, ValueError) as error:
                stored += store.store_new([minimal_row(row, error)])
        return stored


class DeadLetterMover(Middleware):
    """Run :func:`drain` in a background thread of each worker process.

    Parameters:
      interval(float): seconds between passes. Defaults to ``CALLBOARD_DLQ_DRAIN_INTERVAL``.
    """

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(broker,), name="callboard-dlq-mover", daemon=True
        )
        self._thread.start()

    def after_nack(self, broker: Broker, message: Any) -> None:
        self._wake.set()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stopping.set()
        self._wake.set()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, broker: Broker) -> None:
        delay = self.interval
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            try:
                drain(broker)
                delay = self.interval
            except Exception as error:
                delay = min(max(delay, 1.0) * 2, MAX_BACKOFF)
                log_event(
                    logger,
                    logging.ERROR,
                    "dlq.move_failed",
                    error=f"{type(error).__name__}: {error}",
                    retry_in_s=delay,
                )
            if self._stopping.is_set():
                return
