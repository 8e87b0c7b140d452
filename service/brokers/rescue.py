"""The rescuer: give a dead worker's in-flight and prefetched messages back to their queues.

Dramatiq's Redis broker keeps every fetched, unacked message id in the fetching broker's ack set
(``<ns>:__acks__.<broker id>.<queue>``) and each broker's last command time in
``<ns>:__heartbeats__``. It requeues a dead broker's ids only during a maintenance pass that runs
on a random 0.1 % of commands, and then only for the queue of that command. :func:`rescue` does
the whole job on every pass:

* A broker whose ``__heartbeats__`` score is older than the timeout is dead. For each dead broker,
  in one atomic script: every id of its ack sets, for every known queue and its ``.DQ`` delay
  queue, goes back to the tail of that queue's list if its body is still stored; the ack sets are
  deleted; the broker leaves ``__heartbeats__``. Idle consumers are woken.
* It is idempotent and cheap when nobody died (one ``ZRANGEBYSCORE``), so every worker process
  runs it at start and then every ``CALLBOARD_HEARTBEAT_TIMEOUT`` / 2 (:class:`Rescuer`), and so
  does the scheduler leader: recovery is bounded by about 1.5 times the timeout without a scheduler.
* A worker whose threads are all busy and whose prefetch is full sends no fetch, so Dramatiq
  would not refresh its heartbeat; the worker's heartbeat thread calls :func:`beat` instead,
  which keeps a busy worker from looking dead.

Finding a dead broker's ack sets: by name, from the queues known to be consumed (this broker's
declared queues plus the registry ``<ns>:callboard.queues`` that every worker's :func:`beat`
adds its queues to), each with its ``.DQ`` delay queue. Not ``KEYS`` (Dramatiq's maintenance
does that: it blocks Redis for the whole keyspace), and not ``SCAN``: producers write to
``__heartbeats__`` too, so some "dead" broker shows up on most passes, and a scan of a keyspace
that also holds results or idempotency keys on every pass would cost far more than a few
``SMEMBERS`` of names we can compute. The limit: ack sets of a queue that no Callboard process
has declared (a plain-Dramatiq worker in the same namespace on a queue of its own) are not seen.

Rescued messages count in ``callboard_rescued_total{queue}`` (delayed ones under their queue)
and are logged as ``worker.rescued`` with the dead broker's id, the queue and the count.

After an outage every heartbeat is stale, the live workers' too: a pass then would requeue what
live workers are running. So :func:`rescue` does nothing while Redis has been up for less than
the timeout (a restart), and a :class:`Rescuer` does nothing until the timeout has passed since
its process last failed to reach Redis (a network cut): by then every live worker has beaten
again. Dramatiq's own random maintenance, which has no such guard, is off
(``maintenance_chance=0`` in :class:`service.brokers.redis.CallboardRedisBroker`).

RabbitMQ needs none of this: it redelivers a consumer's unacked messages as soon as its
connection drops, so :func:`rescue` and :func:`beat` do nothing there.

A rescued message may have been running, or even finished without its batched ack reaching
Redis, when its worker died: it runs again (at-least-once). A worker that only *looked* dead
(frozen longer than the timeout) may also still finish it; keep the timeout well above any pause.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from service.logs import log_event
from service.metrics.definitions import RESCUED

logger = logging.getLogger(__name__)

#: Dead brokers handled per script call (each call is atomic; a long one would block Redis).
BATCH = 50

#: At most one failure line per this many seconds.
LOG_EVERY = 60.0

#: The rescue script. KEYS[1]: namespace. ARGV: cutoff (ms), batch size, queue names...
#: Returns {dead brokers handled, broker, queue, count, broker, queue, count, ...}.
RESCUE_SCRIPT = """
local namespace = KEYS[1]
local heartbeats = namespace .. ":__heartbeats__"
local dead = redis.call("zrangebyscore", heartbeats, "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[2]))
local result = {#dead}
for _, worker in ipairs(dead) do
    for i = 3, #ARGV do
        local queue = ARGV[i]
        local acks = namespace .. ":__acks__." .. worker .. "." .. queue
        local ids = redis.call("smembers", acks)
        if #ids > 0 then
            local list = namespace .. ":" .. queue
            local messages = list .. ".msgs"
            local moved = 0
            for _, id in ipairs(ids) do
                -- an id whose body is gone was acked by a zombie or purged: nothing to run
                if redis.call("hexists", messages, id) == 1 then
                    redis.call("rpush", list, id)
                    moved = moved + 1
                end
            end
            redis.call("del", acks)
            result[#result + 1] = worker
            result[#result + 1] = queue
            result[#result + 1] = moved
        end
    end
    redis.call("zrem", heartbeats, worker)
end
return result
"""


def _registry(broker: RedisBroker) -> str:
    return f"{broker.namespace}:callboard.queues"


def _canonical_queues(broker: RedisBroker) -> set[str]:
    return {name for name in broker.get_declared_queues() if not name.endswith((".DQ", ".XQ"))}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def beat(broker: Broker) -> None:
    """Mark this process's broker alive in ``__heartbeats__`` (now) and add its declared queues
    to the registry the rescuer reads. One pipelined round trip; nothing on RabbitMQ.

    Raises the client's error (``redis.RedisError``, ``OSError``) for the caller to log.
    """
    if not isinstance(broker, RedisBroker):
        return
    pipe = broker.client.pipeline(transaction=False)
    pipe.zadd(f"{broker.namespace}:__heartbeats__", {broker.broker_id: current_millis()})
    queues = _canonical_queues(broker)
    if queues:
        pipe.sadd(_registry(broker), *sorted(queues))
    pipe.execute()


def rescue(broker: Broker, timeout_s: float, *, min_uptime: float | None = None) -> dict[str, int]:
    """Requeue the unacked messages of every broker whose heartbeat is older than ``timeout_s``;
    returns how many went back per queue (``<queue>.DQ`` for delayed ones). ``{}`` on RabbitMQ.

    Each dead broker is handled atomically (one script call per :data:`BATCH` of them); calling
    it again, or from many processes at once, requeues nothing twice. Does nothing while Redis
    has been up for less than ``min_uptime`` seconds (default ``timeout_s``). Raises the
    client's error.
    """
    if not isinstance(broker, RedisBroker):
        return {}
    client = broker.client
    pipe = client.pipeline(transaction=False)
    pipe.info("server")
    pipe.smembers(_registry(broker))
    server, registered = pipe.execute()
    if int(server.get("uptime_in_seconds", 0)) < (timeout_s if min_uptime is None else min_uptime):
        return {}  # restarted: live workers may not have beaten since
    canonical = _canonical_queues(broker) | {_text(name) for name in registered}
    queues = [name for queue in sorted(canonical) for name in (queue, f"{queue}.DQ")]
    script = client.register_script(RESCUE_SCRIPT)
    cutoff = current_millis() - int(timeout_s * 1000)
    rescued: dict[str, int] = {}
    while True:
        flat = script(keys=[broker.namespace], args=[cutoff, BATCH, *queues])
        for i in range(1, len(flat), 3):
            worker, queue, count = _text(flat[i]), _text(flat[i + 1]), int(flat[i + 2])
            rescued[queue] = rescued.get(queue, 0) + count
            if count:
                RESCUED.labels(queue=queue.removesuffix(".DQ")).inc(count)
                log_event(
                    logger, logging.WARNING, "worker.rescued", dead_worker=worker, queue=queue, count=count
                )
        if int(flat[0]) < BATCH:
            break
    wake = getattr(broker, "wake", None)
    if wake is not None:
        for queue, count in rescued.items():
            if count and not queue.endswith(".DQ"):
                wake(queue)
    return {queue: count for queue, count in rescued.items() if count}


class Rescuer:
    """Run :func:`rescue` on a daemon thread of its own: at once, then every ``every`` seconds,
    while ``active()`` is true (the scheduler passes its leadership; workers are always active).

    The thread is the only one that waits on Redis for this, so a slow broker delays neither the
    heartbeat nor the scheduler's main loop. Failures are logged (``worker.rescue_failed``) at
    most once a minute and retried at the next pass. Nothing runs on RabbitMQ.

    Parameters:
      broker(Broker): the process's broker.
      timeout_s(float): a broker silent for longer is dead (``CALLBOARD_HEARTBEAT_TIMEOUT``).
      every(float): seconds between passes. Defaults to ``timeout_s / 2``.
      active(callable): whether to run passes now. Defaults to always.
    """

    def __init__(
        self,
        broker: Broker,
        timeout_s: float,
        *,
        every: float | None = None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.broker = broker
        self.timeout_s = timeout_s
        self.every = every if every is not None else timeout_s / 2
        self._active = active
        self._stop = threading.Event()
        self._logged = -math.inf
        self._trusted_from = 0.0  # monotonic time from which a pass may act (see distrust)
        self._thread = threading.Thread(target=self._loop, name="callboard-rescuer", daemon=True)

    def start(self) -> Rescuer:
        """Start the thread (not on RabbitMQ); returns ``self``."""
        if isinstance(self.broker, RedisBroker):
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the pass in progress, waiting for it at most a second."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)

    def _loop(self) -> None:
        due = 0.0  # monotonic time of the next pass (0: at once)
        while not self._stop.is_set():
            pause = 1.0  # at most: a replica that starts leading runs its first pass soon
            if self._active():
                if time.monotonic() >= due:
                    due = time.monotonic() + self.every
                    self.run_once()
                pause = min(pause, max(due - time.monotonic(), 0.05))
            self._stop.wait(pause)

    def distrust(self) -> None:
        """This process just failed to reach Redis: act on no heartbeat until the timeout has
        passed, so every live worker has beaten again since."""
        self._trusted_from = time.monotonic() + self.timeout_s

    def run_once(self) -> dict[str, int]:
        """One pass; errors are logged, not raised. Returns what was rescued (``{}`` while
        distrusting, see :meth:`distrust`)."""
        if time.monotonic() < self._trusted_from:
            return {}
        try:
            return rescue(self.broker, self.timeout_s)
        except Exception as error:  # the broker is down or slow: the next pass tries again
            self.distrust()
            if time.monotonic() - self._logged >= LOG_EVERY:
                self._logged = time.monotonic()
                log_event(
                    logger,
                    logging.WARNING,
                    "worker.rescue_failed",
                    error=f"{type(error).__name__}: {error}"[:300],
                )
            return {}
