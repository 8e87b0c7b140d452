"""The broker gauges: depth, in flight, delayed, oldest age, dead letters and SLA per queue.

They describe shared state (the broker, the dead-letter store), not this process, so exactly one
process exports them: the scheduler replica that holds the lease. It refreshes them with a
:class:`Refresher`; a replica that does not lead (or stops leading) removes every series with
:func:`clear`, so two replicas never both export them and ``sum()`` in a dashboard stays right.

Queues: every queue of the catalogue (``config/queues.py``), then every other queue the broker
has declared (the queues of the loaded actors), read with the broker's own ``queue_stats``.

* ``callboard_queue_depth``, ``_delayed``: per queue. ``_in_flight``: per queue when the broker
  can tell (Redis; not RabbitMQ). ``_oldest_age_seconds``: 0 when nothing waits; absent when
  messages wait but the broker cannot tell their age (RabbitMQ).
* ``callboard_dead_letters_current``: dead letters in the store with state ``dead``, per queue
  (0 for a listed queue without any; a queue with dead letters is listed even when no actor
  declares it any more). Left as it was when the database cannot be read.
* ``callboard_queue_sla_seconds``: catalogue queues only.
* ``callboard_broker_gauges_timestamp_seconds``: Unix time of the last refresh that read the
  broker; 0 on a replica that does not lead. Alert on ``time() - max(...)``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq import Broker
from prometheus_client import Gauge

from config.queues import QUEUES
from config.settings import Settings
from service.brokers.stats import QueueStats
from service.db.engine import database_url
from service.deadletters import store
from service.logs import log_event
from service.metrics.definitions import (
    BROKER_GAUGES_UPDATED,
    DEAD_LETTERS_CURRENT,
    QUEUE_DELAYED,
    QUEUE_DEPTH,
    QUEUE_IN_FLIGHT,
    QUEUE_OLDEST_AGE,
    QUEUE_SLA,
)

logger = logging.getLogger(__name__)

#: Seconds between refreshes while leading.
INTERVAL = 15.0

#: Seconds one refresh is waited for before it is reported slow (it goes on in the background;
#: no other starts until it ends, and the gauges keep their last values meanwhile).
TIMEOUT = 10.0

#: Seconds between two checks of leadership (how soon a replica that stops leading clears).
CHECK_EVERY = 1.0

#: At most one failure line per this many seconds (a broker down for an hour logs 60 lines).
LOG_EVERY = 60.0

_GAUGES: tuple[Gauge, ...] = (
    QUEUE_DEPTH,
    QUEUE_IN_FLIGHT,
    QUEUE_DELAYED,
    QUEUE_OLDEST_AGE,
    DEAD_LETTERS_CURRENT,
    QUEUE_SLA,
)

_lock = threading.Lock()  # setting and clearing never interleave
_series: dict[Gauge, set[str]] = {gauge: set() for gauge in _GAUGES}  # queue labels set, per gauge
_logged: dict[str, float] = {}


def queue_names(broker: Broker) -> list[str]:
    """The catalogue's queues in catalogue order, then the broker's other declared queues, sorted
    (delay and dead-letter queues are part of their queue's figures, never listed alone)."""
    declared = {name for name in broker.get_declared_queues() if not name.endswith((".DQ", ".XQ"))}
    return list(QUEUES) + sorted(declared - set(QUEUES))


def refresh(broker: Broker, settings: Settings, *, leading: Callable[[], bool] = lambda: True) -> None:
    """Read every queue's figures and set the gauges; ``leading()`` is asked again just before
    they are set, under the lock :func:`clear` takes, so a refresh that outlasts the lease never
    brings back series that were just cleared. Errors are logged (at most once a minute)."""
    stats_of = getattr(broker, "queue_stats", None)
    if stats_of is None:
        return  # a broker that cannot tell (the stub broker of unit tests)
    names = queue_names(broker)
    try:
        stats: list[QueueStats] = [stats_of(name) for name in names]
    except Exception as error:
        _log_failure("broker", error)
        return
    dead: dict[str, int] | None
    try:
        dead = {}
        for row in store.stats(database_url(settings)):
            dead[row["queue"]] = dead.get(row["queue"], 0) + row["count"]
    except Exception as error:  # the broker's figures are still worth exporting
        _log_failure("database", error)
        dead = None
    values: dict[Gauge, dict[str, float]] = {gauge: {} for gauge in _GAUGES}
    for one in stats:
        values[QUEUE_DEPTH][one.queue] = one.waiting
        values[QUEUE_DELAYED][one.queue] = one.delayed
        if one.in_flight is not None:
            values[QUEUE_IN_FLIGHT][one.queue] = one.in_flight
        age = 0.0 if one.waiting == 0 else one.oldest_age
        if age is not None:
            values[QUEUE_OLDEST_AGE][one.queue] = age
        spec = QUEUES.get(one.queue)
        if spec is not None:
            values[QUEUE_SLA][one.queue] = spec.sla_seconds
    if dead is not None:
        values[DEAD_LETTERS_CURRENT] = {**dict.fromkeys(names, 0), **dead}
    with _lock:
        if not leading():
            _clear()
            return
        for gauge, by_queue in values.items():
            if gauge is DEAD_LETTERS_CURRENT and dead is None:
                continue
            _replace(gauge, by_queue)
        BROKER_GAUGES_UPDATED.set(time.time())


def clear() -> None:
    """Remove every broker gauge series (this replica does not lead)."""
    with _lock:
        _clear()


def exported() -> bool:
    """Whether any broker gauge series is set now."""
    with _lock:
        return any(_series.values())


def _clear() -> None:
    for gauge in _GAUGES:
        gauge.clear()
        _series[gauge] = set()
    BROKER_GAUGES_UPDATED.set(0)


def _replace(gauge: Gauge, by_queue: dict[str, float]) -> None:
    for queue in _series[gauge] - set(by_queue):
        gauge.remove(queue)
    for queue, value in by_queue.items():
        gauge.labels(queue=queue).set(value)
    _series[gauge] = set(by_queue)


def _log_failure(part: str, error: Exception) -> None:
    now = time.monotonic()
    if now - _logged.get(part, -math.inf) >= LOG_EVERY:
        _logged[part] = now
        log_event(
            logger,
            logging.WARNING,
            "metrics.broker_gauges_failed",
            part=part,
            error=f"{type(error).__name__}: {error}"[:300],
        )


class Refresher:
    """Keep the gauges fresh while ``leading()`` is true, and cleared while it is false.

    A daemon thread checks leadership every :data:`CHECK_EVERY` seconds and, while leading,
    refreshes every ``interval`` seconds (at once on taking the lead). The refresh itself runs on
    a second, long-lived daemon thread (RabbitMQ channels belong to the thread that opened them)
    and is waited for at most ``timeout``: a slow or black-holed broker never delays the caller
    (the scheduler's lease renewal) nor the clearing, and never piles up threads.

    Parameters:
      broker(Broker), settings(Settings): what :func:`refresh` reads.
      leading(callable): whether this replica leads now; called from both threads.
      interval(float): seconds between refreshes. Defaults to :data:`INTERVAL`.
      timeout(float): seconds a refresh is waited for. Defaults to :data:`TIMEOUT`.
    """

    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        leading: Callable[[], bool],
        *,
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self._leading = leading
        self._stop = threading.Event()
        self._io = _OneThread(lambda: refresh(broker, settings, leading=lambda: self._leading()))
        self._thread = threading.Thread(target=self._loop, name="callboard-broker-gauges", daemon=True)

    def start(self) -> Refresher:
        """Start the threads; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing and clear the gauges (a refresh in progress sets nothing afterwards)."""
        self._stop.set()
        self._thread.join(CHECK_EVERY + 1)
        self._leading = lambda: False
        clear()

    def _loop(self) -> None:
        due = 0.0  # monotonic time of the next refresh while leading (0: at once)
        while not self._stop.wait(CHECK_EVERY):
            if not self._leading():
                if exported():
                    clear()
                due = 0.0
                continue
            if time.monotonic() < due:
                continue
            due = time.monotonic() + self.interval
            if self._io.run(self.timeout) is False:
                log_event(logger, logging.WARNING, "metrics.broker_gauges_slow", timeout=self.timeout)


class _OneThread:
    """Run ``work`` on one long-lived daemon thread, one call at a time."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._work = work
        self._go = threading.Event()
        self._done = threading.Event()
        self._done.set()
        threading.Thread(target=self._serve, name="callboard-broker-gauges-io", daemon=True).start()

    def run(self, timeout: float) -> bool | None:
        """Start ``work`` and wait up to ``timeout``: ``True`` done, ``False`` still running,
        ``None`` not started because the previous call is still running."""
        if not self._done.is_set():
            return None
        self._done.clear()
        self._go.set()
        return self._done.wait(timeout)

    def _serve(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            try:
                self._work()
            except Exception as error:  # refresh logs its own; this is a bug: keep serving
                _log_failure("refresh", error)
            finally:
                self._done.set()
