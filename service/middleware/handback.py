"""Hand messages back to the broker when a worker stops, so a shutdown never strands one.

Dramatiq's worker requeues prefetched messages on shutdown but leaves a message still running
past the shutdown timeout in the broker's in-flight set, where Redis recovers it only after a
heartbeat timeout and a random maintenance pass. This middleware tracks running messages; at
``after_worker_shutdown`` it marks them released (their late ack must not delete a requeued
body) and asks the broker to requeue everything this process still holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from dramatiq import Broker, Middleware

from service.brokers.disposition import Disposition, mark
from service.logs import log_event

logger = logging.getLogger(__name__)


class HandBack(Middleware):
    """Track running messages and return them to the broker at worker shutdown (and tell the
    broker the shutdown began, so idle consumers stop waiting)."""

    def __init__(self) -> None:
        self._running: dict[int, Any] = {}
        self._on_busy: Callable[[], None] | None = None

    def before_process_message(self, broker: Broker, message: Any) -> None:
        running = self._running
        idle = not running
        running[threading.get_ident()] = message
        if idle and self._on_busy is not None:
            self._on_busy()

    def on_busy(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a message starts while none runs in this process (the status
        writer looks at the running messages while there are any, and sleeps otherwise)."""
        self._on_busy = callback

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._running.pop(threading.get_ident(), None)

    after_skip_message = after_process_message

    def running(self) -> list[Any]:
        """The messages running in this process now, one per busy worker thread."""
        return list(self._running.values())

    def current(self) -> Any | None:
        """The message the calling worker thread runs, if any."""
        return self._running.get(threading.get_ident())

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        begin_shutdown = getattr(broker, "begin_shutdown", None)
        if begin_shutdown is not None:
            begin_shutdown()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.hand_back(broker)

    def hand_back(self, broker: Broker) -> int:
        """Release running messages and requeue all this process holds; returns how many."""
        running = list(self._running.values())
        for message in running:
            mark(message, Disposition.RELEASED)
        hand_back_unacked = getattr(broker, "hand_back_unacked", None)
        if hand_back_unacked is None:
            return 0
        try:
            count = int(hand_back_unacked())
        except Exception as error:  # the broker is gone: recovery by heartbeat timeout takes over
            log_event(logger, logging.ERROR, "worker.hand_back_failed", error=str(error))
            return 0
        if count or running:
            log_event(logger, logging.WARNING, "worker.handed_back", count=count, running=len(running))
        return count
