"""A worker process's heartbeat: its gauges, a beat to the supervisor, the shared registry,
its broker's liveness, the rescuer, and recycling when a thread is stuck for good.

Every second the heartbeat thread flushes the process's metric buffer and samples what runs
now into ``callboard_messages_inprogress`` and ``callboard_worker_threads_busy``. Every
``CALLBOARD_HEARTBEAT_INTERVAL`` (and at least three times per ``CALLBOARD_HEARTBEAT_TIMEOUT``)
it marks the process's broker alive in Dramatiq's ``__heartbeats__``
(:func:`service.brokers.rescue.beat`): a worker whose threads are all busy and whose prefetch
is full sends no fetch, and without this beat it would look dead to the rescuer. Every
``CALLBOARD_HEARTBEAT_INTERVAL`` it also
  * tells the supervisor (``announce("beat", {...})``), which answers ``/healthz`` from it and
    sets the pod's heartbeat and stuck-thread gauges: a process that stops beating (wedged, or
    holding the GIL in C code) or reports stuck threads makes the pod unhealthy,
  * publishes a :class:`service.health.heartbeats.Beat` to the shared-state Redis, so
    ``callboard health`` sees which workers are alive and what they consume. Its data carries
    ``broker_id``, the id that ``worker.rescued`` names as ``dead_worker``.

The heartbeat owns the process's :class:`service.brokers.rescue.Rescuer`, a thread of its own
that requeues dead workers' messages at start and every ``CALLBOARD_HEARTBEAT_TIMEOUT`` / 2.

A thread stuck past its hard limit (:data:`STUCK_GRACE`) for ``CALLBOARD_STUCK_RECYCLE_AFTER``
more seconds makes the heartbeat call ``on_stuck`` once (``worker.stuck_recycling``): the
process recycles itself gracefully, so the pod gets a fresh process instead of one thread short
until a liveness probe restarts the whole pod.

A registry or broker error is logged at most once a minute and never stops the beat.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Broker

from config.settings import Settings
from service.brokers import rescue
from service.health import heartbeats
from service.logs import log_event
from service.metrics import definitions as m
from service.metrics.buffer import PROCESS_BUFFER
from service.middleware.time_limits import STUCK_GRACE, TimeLimits

logger = logging.getLogger(__name__)

Announce = Callable[[str, dict[str, Any]], None]

#: Seconds between samples of what runs now (``callboard_messages_inprogress``): sampled rather
#: than counted up and down per message, which would cost two metric writes a message.
SAMPLE_EVERY = 1.0


class Heartbeat:
    """Beat every ``settings.heartbeat_interval`` seconds until :meth:`stop`.

    Parameters:
      broker(Broker): the process's broker (liveness, rescuer, time limits).
      settings(Settings): intervals and timeouts.
      queues(tuple[str, ...]), threads(int): what the process consumes, for the registry.
      client(redis.Redis | None): the shared-state Redis, or ``None`` without one.
      announce(callable | None): sends a beat to the supervisor.
      on_stuck(callable | None): called once when a thread is stuck for good (recycle).
    """

    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        *,
        queues: tuple[str, ...],
        threads: int,
        client: redis.Redis | None,
        announce: Announce | None = None,
        on_stuck: Callable[[], None] | None = None,
    ) -> None:
        self.interval = settings.heartbeat_interval
        # Three beats per timeout, so one late beat never makes a live worker look dead.
        self.alive_every = min(self.interval, settings.heartbeat_timeout / 3)
        self.client = client
        self.announce = announce
        self.on_stuck = on_stuck if settings.stuck_recycle_after > 0 else None
        self.stuck_after = STUCK_GRACE + settings.stuck_recycle_after
        self._broker = broker
        self._rescuer = rescue.Rescuer(broker, settings.heartbeat_timeout)
        self._stuck_fired = False
        self._last_alive_error = -float("inf")
        # broker_id: the id the rescuer logs as ``dead_worker``, so a rescue names its process.
        self.beat = heartbeats.Beat(
            id=heartbeats.new_id(),
            data={
                "queues": sorted(queues),
                "threads": threads,
                "broker_id": getattr(broker, "broker_id", None),
            },
        )
        self._limits = next((mw for mw in broker.middleware if isinstance(mw, TimeLimits)), None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="callboard-heartbeat", daemon=True)
        self._last_error = -float("inf")
        self._sampled: set[tuple[str, str]] = set()

    def start(self) -> Heartbeat:
        """Beat once now, then every interval in a daemon thread; start the rescuer."""
        m.WORKER_THREADS.set(self.beat.data["threads"])
        self._thread.start()
        self._rescuer.start()
        return self

    def stop(self) -> None:
        """Stop beating, write the last buffered metrics, and remove this process from the
        registry (it stopped cleanly)."""
        self._stop.set()
        self._rescuer.stop()
        self._thread.join(timeout=5)
        PROCESS_BUFFER.flush()
        m.WORKER_THREADS.set(0)
        if self.client is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                heartbeats.forget(self.client, "workers", self.beat.id)

    def _run(self) -> None:
        next_beat = next_alive = 0.0
        while True:
            busy = self.sample()
            if time.monotonic() >= next_alive:
                self.alive()
                next_alive = time.monotonic() + self.alive_every
            if time.monotonic() >= next_beat:
                self.once(busy)
                next_beat = time.monotonic() + self.interval
            self.check_stuck()
            if self._stop.wait(min(SAMPLE_EVERY, self.interval, self.alive_every)):
                return

    def alive(self) -> None:
        """Mark the process's broker alive for the rescuer (errors logged once a minute)."""
        try:
            rescue.beat(self._broker)
        except (redis.RedisError, OSError) as error:
            self._rescuer.distrust()
            if time.monotonic() - self._last_alive_error > 60:
                self._last_alive_error = time.monotonic()
                log_event(
                    logger,
                    logging.WARNING,
                    "worker.heartbeat_failed",
                    error=f"{type(error).__name__}: {error}",
                )

    def check_stuck(self) -> None:
        """Call ``on_stuck`` once if a thread has been stuck past its hard limit for
        :data:`STUCK_GRACE` + ``CALLBOARD_STUCK_RECYCLE_AFTER`` seconds."""
        if self.on_stuck is None or self._stuck_fired or self._limits is None:
            return
        stuck = self._limits.stuck_threads(self.stuck_after)
        if stuck:
            self._stuck_fired = True
            log_event(
                logger,
                logging.WARNING,
                "worker.stuck_recycling",
                stuck=stuck,
                after_s=round(self.stuck_after, 1),
            )
            self.on_stuck()

    def sample(self) -> int:
        """Flush the process's metric buffer and set the gauges of what runs now (per queue and
        actor, and busy threads); returns how many threads are busy."""
        PROCESS_BUFFER.flush()
        running = self._limits.running() if self._limits else collections.Counter()
        for queue, actor in self._sampled - running.keys():
            m.IN_PROGRESS.labels(queue, actor).set(0)
        for (queue, actor), count in running.items():
            m.IN_PROGRESS.labels(queue, actor).set(count)
        self._sampled = set(running)
        busy = sum(running.values())
        m.WORKER_THREADS_BUSY.set(busy)
        return busy

    def once(self, busy: int) -> None:
        """One beat (the thread calls this; tests may too)."""
        stuck = self._limits.stuck_threads() if self._limits else 0
        self.beat.data.update(busy=busy, stuck=stuck)
        if self.announce is not None:
            self.announce("beat", {"busy": busy, "stuck": stuck})
        if self.client is None:
            return
        try:
            heartbeats.publish(self.client, "workers", self.beat)
        except (redis.RedisError, OSError) as error:
            if time.monotonic() - self._last_error > 60:
                self._last_error = time.monotonic()
                log_event(
                    logger,
                    logging.WARNING,
                    "worker.heartbeat_failed",
                    error=f"{type(error).__name__}: {error}",
                )
