"""Heartbeat and rescuer for workers started by Dramatiq's own CLI (``dramatiq service.boot``).

``callboard worker`` starts a :class:`service.worker.heartbeat.Heartbeat` in each worker process.
Dramatiq's CLI runs no code of ours there but the middleware stack, so :mod:`service.boot` adds
:class:`StockWorkerHeartbeat`: without it, a stock worker whose threads are all busy and whose
prefetch is full would look dead to the rescuers of other processes (its messages would run
twice), and it would run no rescue pass of its own.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Middleware

from config.settings import get_settings
from service.state import state_client
from service.worker.heartbeat import Heartbeat


class StockWorkerHeartbeat(Middleware):
    """Start a :class:`Heartbeat` (liveness beats, registry entry, rescuer) when a worker boots
    in this process and stop it when the worker shuts down. No supervisor: no stuck-thread
    recycling and no announcements."""

    def __init__(self) -> None:
        self._heartbeat: Heartbeat | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        settings = get_settings()
        queues = tuple(sorted(name for name in worker.consumers if not name.endswith(".DQ")))
        self._heartbeat = Heartbeat(
            broker,
            settings,
            queues=queues,
            threads=worker.worker_threads,
            client=state_client(broker, settings),
        ).start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()
