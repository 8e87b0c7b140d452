"""Retries on a real broker: backoff bounds and jitter, non-retryable exceptions, and a retry
whose re-enqueue fails (broker cut through a proxy) keeps the message."""

from __future__ import annotations

import statistics
from urllib.parse import urlsplit

import pytest
from dramatiq import Broker

from service import send, send_many
from service.deadletters import store
from tests.conftest import unavailable
from tests.integration.conftest import StartWorker
from tests.support.proxy import FaultyProxy
from tests.support.records import entries
from tests.support.waiting import wait_until


def dead_letters(reason: str) -> int:
    """How many dead letters with ``reason`` the store holds."""
    return len(store.list_dead(store.Selection(reason=reason), limit=10_000))


@pytest.mark.usefixtures("operator_env")
def test_backoff_delays_stay_in_policy_bounds_and_spread(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    # Given a worker polling delayed messages finely, and 20 messages that always fail,
    # allowed one retry with a 1 s floor (so the retry waits uniform(1, 2) s)
    start_worker(
        CALLBOARD_BROKER_URL=broker_url, CALLBOARD_WORKER_IDLE_TIMEOUT="0.05", CALLBOARD_WORKER_THREADS="8"
    )
    tokens = [f"jitter-{i}" for i in range(20)]
    for token in tokens:
        send("tb_fail", [token], max_retries=1, min_backoff=1000, max_backoff=600_000)
    # When both attempts of each have run
    gaps = []
    for token in tokens:
        attempts = wait_until(
            lambda t=token: len(entries(t, "attempt")) == 2 and entries(t, "attempt"),
            timeout=30,
            message=f"two attempts of {token}",
        )
        gaps.append(attempts[1]["at"] - attempts[0]["at"])
    # Then every retry waited at least the floor and at most the ceiling (plus polling slack)
    assert min(gaps) >= 1.0, gaps
    assert max(gaps) <= 2.0 + 0.5, gaps
    # And jitter spread them (uniform(1, 2) has a stdev of 0.29 s)
    assert statistics.pstdev(gaps) > 0.1, gaps
    # And after the last retry each message is dead-lettered, not run again
    wait_until(lambda: dead_letters("exhausted") == 20, timeout=20, message="20 dead letters")
    assert all(len(entries(t, "attempt")) == 2 for t in tokens)


def test_non_retryable_exception_fails_at_once(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    worker = start_worker(CALLBOARD_BROKER_URL=broker_url)
    send("tb_throws", ["throws"])
    dead = worker.wait_for_event("message.dead")
    assert dead[0]["reason"] == "non_retryable" and dead[0]["attempts"] == 1
    assert dead[0]["actor"] == "tb_throws"
    assert len(entries("throws", "attempt")) == 1
    assert not worker.events("message.retried")


def test_exhausted_retries_are_logged_with_reason(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    worker = start_worker(CALLBOARD_BROKER_URL=broker_url, CALLBOARD_WORKER_IDLE_TIMEOUT="0.05")
    send("tb_fail", ["exhausted"], max_retries=2, min_backoff=50, max_backoff=100)
    dead = worker.wait_for_event("message.dead", timeout=30)
    assert dead[0]["reason"] == "exhausted" and dead[0]["attempts"] == 3
    assert len(entries("exhausted", "attempt")) == 3
    assert [line["attempt"] for line in worker.events("message.retried")] == [1, 2]


def _proxy_url(url: str, proxy: FaultyProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host).geturl()


def test_retry_that_cannot_be_enqueued_keeps_the_message(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    # Given a worker that reaches the broker through a proxy we can cut
    target = urlsplit(broker_url)
    if target.scheme == "unix":
        unavailable("the broker under test listens on a Unix socket only")
    proxy = FaultyProxy(target.hostname or "127.0.0.1", target.port or 6379)
    try:
        worker = start_worker(CALLBOARD_BROKER_URL=_proxy_url(broker_url, proxy))
        send("tb_wait_then_fail_once", ["cut"])
        wait_until(lambda: entries("cut", "started"), message="the actor to start")
        # When the broker becomes unreachable and then the actor fails (its retry cannot be sent)
        proxy.cut()
        producer_records = entries("cut")
        assert producer_records  # the record Redis is reached directly, not through the proxy
        from tests.support.records import client

        client().set("go:cut", 1)
        if urlsplit(broker_url).scheme.startswith("redis"):
            worker.wait_for_event("message.retry_failed", timeout=30)
        # And the broker comes back
        proxy.restore()
        # Then the message was not lost: it runs again and succeeds
        wait_until(lambda: entries("cut", "done"), timeout=60, message="the message to run again")
        worker.stop()  # while the proxy still forwards: a worker cut off waits for its acks
    finally:
        proxy.close()


def test_bulk_send_delivers_every_message(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    start_worker(CALLBOARD_BROKER_URL=broker_url, CALLBOARD_WORKER_THREADS="8")
    ids = send_many("tb_record", [["bulk", n] for n in range(500)], batch_size=128)
    assert len(set(ids)) == 500
    wait_until(lambda: len(entries("bulk", "done")) == 500, timeout=60, message="500 completions")
    assert sorted(e["n"] for e in entries("bulk", "done")) == list(range(500))
