"""The rescuer on a real Redis: a dead worker's ack sets (normal and delayed queues) go back to
their queues, its heartbeat entry goes, live workers are untouched; a busy worker whose prefetch
is full stays alive through its heartbeat thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from prometheus_client import REGISTRY

from service import send
from service.brokers.redis import CallboardRedisBroker
from service.brokers.rescue import Rescuer, beat, rescue
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.records import entries
from tests.support.waiting import wait_until

NS = "dramatiq"
HEARTBEATS = f"{NS}:__heartbeats__"


@pytest.fixture
def broker(redis_url: str) -> Iterator[CallboardRedisBroker]:
    """A Callboard Redis broker with queue ``rq`` declared (no middleware: nothing runs here)."""
    broker = CallboardRedisBroker(url=redis_url, middleware=[])
    broker.declare_queue("rq")
    yield broker
    broker.close()


def _acks(worker: str, queue: str) -> str:
    return f"{NS}:__acks__.{worker}.{queue}"


def _store(client: redis.Redis, queue: str, worker: str, ids: list[str], *, bodies: bool = True) -> None:
    """Fake ``worker`` having fetched ``ids`` from ``queue`` (bodies stored unless told not)."""
    client.sadd(_acks(worker, queue), *ids)
    if bodies:
        client.hset(f"{NS}:{queue}.msgs", mapping={i: f"body-{i}" for i in ids})


def _rescued(queue: str) -> float:
    return REGISTRY.get_sample_value("callboard_rescued_total", {"queue": queue}) or 0.0


def _strings(values: list[bytes]) -> set[str]:
    return {value.decode() for value in values}


def test_a_dead_workers_messages_go_back_and_live_workers_are_untouched(
    broker: CallboardRedisBroker, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a dead worker (silent for 60 s) holding messages of rq, of rq's delay queue, and of a
    # queue only the registry knows; an id of its whose body is gone; a silent producer without
    # ack sets; and a live worker holding a message of rq
    now_ms = int(time.time() * 1000)
    redis_client.zadd(HEARTBEATS, {"dead": now_ms - 60_000, "producer": now_ms - 60_000, "live": now_ms})
    _store(redis_client, "rq", "dead", ["a", "b"])
    _store(redis_client, "rq", "dead", ["gone"], bodies=False)
    _store(redis_client, "rq.DQ", "dead", ["c"])
    redis_client.sadd(f"{NS}:callboard.queues", "other")
    _store(redis_client, "other", "dead", ["o"])
    _store(redis_client, "rq", "live", ["d"])
    before = _rescued("rq"), _rescued("other")
    wakeups = redis_client.pubsub()
    wakeups.subscribe(broker.wakeups.channel)
    wait_until(lambda: wakeups.get_message(timeout=0.1), timeout=5, message="the subscription")
    caplog.set_level(logging.INFO, logger="service.brokers.rescue")

    # When the rescuer runs with a 30 s timeout
    found = rescue(broker, 30, min_uptime=0)

    # Then every stored message of the dead worker is back on its queue, delayed ones included
    assert found == {"rq": 2, "rq.DQ": 1, "other": 1}
    assert _strings(redis_client.lrange(f"{NS}:rq", 0, -1)) == {"a", "b"}
    assert _strings(redis_client.lrange(f"{NS}:rq.DQ", 0, -1)) == {"c"}
    assert _strings(redis_client.lrange(f"{NS}:other", 0, -1)) == {"o"}
    # its ack sets and heartbeat entry are gone, and so is the silent producer's entry
    for queue in ("rq", "rq.DQ", "other"):
        assert not redis_client.exists(_acks("dead", queue))
    assert redis_client.zscore(HEARTBEATS, "dead") is None
    assert redis_client.zscore(HEARTBEATS, "producer") is None
    # the live worker keeps its message and its entry
    assert _strings(redis_client.smembers(_acks("live", "rq"))) == {"d"}
    assert redis_client.zscore(HEARTBEATS, "live") == now_ms
    # counted per queue (delayed under their queue), logged with the dead worker's id
    assert (_rescued("rq") - before[0], _rescued("other") - before[1]) == (3, 1)
    logged = [r for r in caplog.records if getattr(r, "event", None) == "worker.rescued"]
    fields = sorted((r.fields["dead_worker"], r.fields["queue"], r.fields["count"]) for r in logged)  # type: ignore[attr-defined]
    assert fields == [("dead", "other", 1), ("dead", "rq", 2), ("dead", "rq.DQ", 1)]
    # and idle consumers of the canonical queues were woken
    woken: set[str] = set()

    def both_woken() -> bool:
        message = wakeups.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            woken.add(message["data"].decode())
        return woken >= {"rq", "other"}

    wait_until(both_woken, timeout=5, message="wake-ups of rq and other")
    wakeups.close()

    # And a second pass finds nothing left to do
    assert rescue(broker, 30, min_uptime=0) == {}
    assert redis_client.llen(f"{NS}:rq") == 2


def test_many_dead_workers_are_handled_in_batches(
    broker: CallboardRedisBroker, redis_client: redis.Redis
) -> None:
    # Given more dead workers than one script call handles, each holding one message
    old = int(time.time() * 1000) - 60_000
    workers = [f"w{n}" for n in range(120)]
    redis_client.zadd(HEARTBEATS, dict.fromkeys(workers, old))
    for worker in workers:
        _store(redis_client, "rq", worker, [f"m-{worker}"])
    # When the rescuer runs once
    found = rescue(broker, 30, min_uptime=0)
    # Then every message is back and no dead worker is left
    assert found == {"rq": 120}
    assert redis_client.llen(f"{NS}:rq") == 120
    assert redis_client.zcard(HEARTBEATS) == 0


def test_beat_keeps_a_worker_alive_and_registers_its_queues(
    broker: CallboardRedisBroker, redis_client: redis.Redis
) -> None:
    # Given a worker that last fetched 60 s ago and still holds a message
    redis_client.zadd(HEARTBEATS, {broker.broker_id: int(time.time() * 1000) - 60_000})
    _store(redis_client, "rq", broker.broker_id, ["x"])
    # When its heartbeat thread beats
    beat(broker)
    # Then the rescuer leaves it alone, and its queues are in the registry
    assert rescue(broker, 30, min_uptime=0) == {}
    assert redis_client.sismember(_acks(broker.broker_id, "rq"), "x")
    assert _strings(redis_client.smembers(f"{NS}:callboard.queues")) == {"rq"}


def test_the_rescuer_thread_runs_at_start(broker: CallboardRedisBroker, redis_client: redis.Redis) -> None:
    # Given a dead worker's message
    redis_client.zadd(HEARTBEATS, {"dead": int(time.time() * 1000) - 60_000})
    _store(redis_client, "rq", "dead", ["a"])
    # (on a Redis up for longer than the timeout: an embedded one may have just started)
    wait_until(lambda: redis_client.info("server")["uptime_in_seconds"] >= 1, timeout=5, message="uptime")
    # When a rescuer starts (with a long period)
    rescuer = Rescuer(broker, 1, every=3600).start()
    try:
        # Then its first pass requeues the message at once
        wait_until(lambda: redis_client.llen(f"{NS}:rq") == 1, timeout=10, message="the first pass")
    finally:
        rescuer.stop()


def test_a_rescuer_that_just_lost_redis_waits_a_timeout_before_acting(
    broker: CallboardRedisBroker, redis_client: redis.Redis
) -> None:
    # Given a worker silent for 60 s, and a Redis up for longer than the timeout
    redis_client.zadd(HEARTBEATS, {"dead": int(time.time() * 1000) - 60_000})
    _store(redis_client, "rq", "dead", ["a"])
    wait_until(lambda: redis_client.info("server")["uptime_in_seconds"] >= 1, timeout=5, message="uptime")
    rescuer = Rescuer(broker, 1, every=3600)
    # When this process has just failed to reach Redis (an outage: every heartbeat is stale)
    rescuer.distrust()
    # Then a pass acts on no heartbeat until a timeout has passed, and then it does
    assert rescuer.run_once() == {}
    assert redis_client.llen(f"{NS}:rq") == 0
    wait_until(lambda: rescuer.run_once() == {"rq": 1}, timeout=5, message="the pass after the timeout")


def test_rabbitmq_and_other_brokers_need_no_rescue() -> None:
    # RabbitMQ redelivers unacked messages when the connection drops: nothing to do there.
    broker = StubBroker(middleware=[])
    assert rescue(broker, 30, min_uptime=0) == {}
    beat(broker)  # no error, nothing sent
    Rescuer(broker, 30).start().stop()


def test_a_busy_worker_with_a_full_prefetch_is_not_rescued(
    start_worker: StartWorker, redis_producer: object
) -> None:
    # Given a worker on one queue with one thread (prefetch 2), a delay-queue prefetch of 1 that
    # a far-off delayed message fills, and a 3 s heartbeat timeout (rescue every 1.5 s)
    send("tb_record", ["later"], delay=600)
    worker = start_worker(
        CALLBOARD_WORKER_QUEUES=QUEUE,
        CALLBOARD_WORKER_THREADS="1",
        CALLBOARD_HEARTBEAT_TIMEOUT="3",
        dramatiq_delay_queue_prefetch="1",
    )
    # When two 5 s messages keep its only thread busy and its prefetch full, so that neither of
    # its consumers sends a fetch (Dramatiq's own heartbeat) for 10 s
    send("tb_slow", ["busy-0", 5])
    send("tb_slow", ["busy-1", 5])
    wait_until(
        lambda: entries("busy-0", "done") and entries("busy-1", "done"),
        timeout=40,
        message="both slow messages done",
    )
    # Then neither was rescued from under it (its heartbeat thread kept it alive): each ran once
    assert not worker.events("worker.rescued")
    assert len(entries("busy-0", "started")) == 1 and len(entries("busy-1", "started")) == 1
