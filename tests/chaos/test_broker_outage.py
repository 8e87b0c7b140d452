"""Chaos scenario 3: the broker goes away mid-load and comes back.

* Redis: the test runs its own redis-server (append-only file, so a clean restart keeps what it
  held) on a spare port and restarts it mid-load, for longer than the heartbeat timeout. The
  workers reconnect by themselves, report not-ready meanwhile, and every message completes once:
  the rescuer does not mistake live workers for dead ones when every heartbeat is stale after
  the outage. A producer's send during the outage raises once ``CALLBOARD_SEND_TIMEOUT`` runs
  out, or succeeds once the broker is back within it; it never returns an id for a message that
  was not stored.
* RabbitMQ: the shared server cannot be restarted, so the test cuts the workers' connections with
  a proxy for the same time. RabbitMQ redelivers what the cut connections held: duplicates are
  allowed there (at-least-once), missing messages are not.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from config.settings import get_settings
from service import send, send_many
from service.brokers.embedded import EmbeddedRedis
from service.errors import BrokerUnavailableError
from tests.conftest import delete_test_queues
from tests.integration.conftest import StartWorker
from tests.support import completions
from tests.support.chaos_actors import QUEUE
from tests.support.ports import free_port
from tests.support.producer import adopt_actors, producing_on
from tests.support.proxy import FaultyProxy
from tests.support.waiting import wait_until

#: Longer than the heartbeat timeout, so every heartbeat is stale when the broker comes back.
OUTAGE = 8.0
HEARTBEAT_TIMEOUT = 3.0

POD = {
    "CALLBOARD_WORKER_PROCESSES": "2",
    "CALLBOARD_WORKER_THREADS": "4",
    "CALLBOARD_WORKER_QUEUES": QUEUE,
    "CALLBOARD_WORKER_MAX_MESSAGES": "0",
    "CALLBOARD_HEARTBEAT_INTERVAL": "0.5",
    "CALLBOARD_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
}


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, on a spare TCP port, persisting to an append-only file."""
    server = EmbeddedRedis(tmp_path / "own-redis", tcp_port=free_port())
    server.start()
    yield server
    server.stop()


def test_workers_and_producers_ride_out_a_redis_restart(
    own_redis: EmbeddedRedis,
    start_worker: StartWorker,
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support import chaos_actors

    monkeypatch.setenv("CALLBOARD_SEND_TIMEOUT", "1")
    get_settings.cache_clear()
    with producing_on(own_redis.url, own_redis.url, tmp_path / "var", monkeypatch) as broker:
        adopt_actors(chaos_actors, broker)
        # Given a pod on the test's own Redis, busy with 600 messages
        port = free_port()
        worker = start_worker(CALLBOARD_BROKER_URL=own_redis.url, CALLBOARD_METRICS_PORT=str(port), **POD)
        wait_until(lambda: _ready(port), timeout=30, message="the pod ready")
        keys = [f"rr-{n}" for n in range(600)]
        send_many("tc_complete", [[key, 0.02] for key in keys])
        wait_until(lambda: len(completions.ledger(ledger_url)) >= 50, timeout=30, message="50 done")

        # When Redis stops for longer than the heartbeat timeout
        own_redis.stop()
        stopped_at = time.monotonic()
        # Then the pod reports not ready, and a send fails within CALLBOARD_SEND_TIMEOUT
        wait_until(lambda: not _ready(port), timeout=15, message="readiness to fail")
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError, match="broker unavailable"):
            send("tc_complete", ["rr-refused"])
        refused_after = time.monotonic() - started
        assert refused_after < 1 + 5  # the retry bound, plus one connect timeout at most
        wait_until(lambda: time.monotonic() - stopped_at >= OUTAGE, timeout=OUTAGE + 5, message="the outage")

        # And a send whose retry bound outlasts the restart stores its message
        monkeypatch.setenv("CALLBOARD_SEND_TIMEOUT", "30")
        get_settings.cache_clear()
        own_redis.start()
        restarted_at = time.monotonic()
        keys.append("rr-after")
        send("tc_complete", ["rr-after"])
        sent_after = time.monotonic() - restarted_at

        # And the pod, never restarted, is ready again and completes every message exactly once
        wait_until(lambda: _ready(port), timeout=30, message="the pod ready again")

        ready_after = time.monotonic() - restarted_at
        wait_until(
            lambda: not completions.check(ledger_url, keys).missing, timeout=60, message="every key completed"
        )
        all_after = time.monotonic() - restarted_at
        verdict = completions.check(ledger_url, keys)
        assert "rr-refused" not in completions.ledger(ledger_url)
        assert verdict.duplicated == {}, "the rescuer took live workers for dead after the outage"
        assert worker.process.poll() is None
        assert not worker.events("worker.rescued")
        print(
            f"[chaos 3 redis] {len(keys)} messages, Redis down {OUTAGE:.0f}s (heartbeat timeout "
            f"{HEARTBEAT_TIMEOUT:.0f}s): send refused after {refused_after:.1f}s, sent {sent_after:.1f}s "
            f"after the restart; pod ready "
            f"{ready_after:.1f}s and all complete {all_after:.1f}s after the restart; duplicates 0"
        )


def test_workers_ride_out_a_rabbitmq_connection_cut(
    amqp_server_url: str,
    redis_url: str,
    start_worker: StartWorker,
    ledger_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support import chaos_actors

    parts = urlsplit(amqp_server_url)
    proxy = FaultyProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    proxied = parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}").geturl()
    try:
        with producing_on(amqp_server_url, redis_url, tmp_path / "var", monkeypatch) as broker:
            adopt_actors(chaos_actors, broker)
            broker.declare_queue(QUEUE)
            # Given a pod consuming RabbitMQ through a proxy, busy with 600 messages
            port = free_port()
            start_worker(CALLBOARD_BROKER_URL=proxied, CALLBOARD_METRICS_PORT=str(port), **POD)
            wait_until(lambda: _ready(port), timeout=30, message="the pod ready")
            keys = [f"rq-{n}" for n in range(600)]
            send_many("tc_complete", [[key, 0.02] for key in keys])
            wait_until(lambda: len(completions.ledger(ledger_url)) >= 50, timeout=30, message="50 done")

            # When every connection of the pod is cut for the outage
            proxy.cut()
            wait_until(lambda: not _ready(port), timeout=15, message="readiness to fail")
            time.sleep(OUTAGE)  # the fault's length itself, not a wait for a condition
            proxy.restore()
            restored_at = time.monotonic()

            # Then the pod reconnects by itself and every message completes
            wait_until(lambda: _ready(port), timeout=30, message="the pod ready again")
            wait_until(
                lambda: not completions.check(ledger_url, keys).missing, timeout=60, message="every key"
            )
            verdict = completions.check(ledger_url, keys)
            print(
                f"[chaos 3 rabbitmq] {len(keys)} messages, connections cut {OUTAGE:.0f}s: all complete "
                f"{time.monotonic() - restored_at:.1f}s after; duplicates {len(verdict.duplicated)} "
                f"(redelivered unacked messages)"
            )
    finally:
        proxy.close()
        delete_test_queues(amqp_server_url, QUEUE)
