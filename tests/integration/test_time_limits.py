"""Soft and hard time limits in a real worker, and in a Worker started from code."""

from __future__ import annotations

import dramatiq
from dramatiq import Broker

from service import send
from tests.integration.conftest import StartWorker
from tests.support.records import entries
from tests.support.waiting import wait_until


def test_soft_limit_is_caught_and_cleanup_runs(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    worker = start_worker(CALLBOARD_BROKER_URL=broker_url)
    send("tb_soft", ["soft"])
    wait_until(lambda: entries("soft", "cleanup"), timeout=20, message="the actor's cleanup")
    soft = worker.wait_for_event("message.time_limit")
    assert soft[0]["kind"] == "soft"
    assert not worker.events("message.dead")  # it cleaned up and returned normally


def test_hard_limit_stops_an_actor_that_ignores_the_soft_one(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    worker = start_worker(CALLBOARD_BROKER_URL=broker_url)
    send("tb_stubborn", ["hard"])
    wait_until(lambda: entries("hard", "stopped"), timeout=20, message="the hard limit")
    assert entries("hard", "ignored")  # it swallowed the soft limit
    dead = worker.wait_for_event("message.dead")
    assert dead[0]["reason"] == "time_limit"
    started, stopped = entries("hard", "started")[0], entries("hard", "stopped")[0]
    assert 1.4 <= stopped["at"] - started["at"] < 5


def test_limits_are_armed_in_a_worker_started_from_code(producer: Broker) -> None:
    # No process_boot signal, no CLI: a plain dramatiq.Worker in this process.
    worker = dramatiq.Worker(producer, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        send("tb_soft", ["from-code"])
        wait_until(lambda: entries("from-code", "cleanup"), timeout=20, message="the cleanup")
    finally:
        worker.stop(timeout=5000)
