"""Whole worker processes: SIGTERM hand-off, process recycling, and the stock dramatiq command."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dramatiq import Broker

from service import send, send_many
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.processes import ROOT, command_env
from tests.support.records import entries
from tests.support.waiting import wait_until


def test_sigterm_lets_a_running_message_finish(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    # Given a worker running a 3 s message, with a shutdown timeout longer than that
    worker = start_worker(CALLBOARD_BROKER_URL=broker_url, CALLBOARD_WORKER_SHUTDOWN_TIMEOUT="30")
    send("tb_slow", ["finish", 3])
    wait_until(lambda: entries("finish", "started"), message="the slow actor to start")
    # When the worker gets SIGTERM
    worker.signal(signal.SIGTERM)
    # Then it finishes the message before exiting cleanly, and nothing is left to run
    assert worker.wait(60) == 0
    assert len(entries("finish", "done")) == 1
    assert not worker.events("worker.handed_back")


def test_sigterm_past_the_shutdown_timeout_hands_the_message_back(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    # Given a worker running an 8 s message with a 1 s shutdown timeout
    first = start_worker(CALLBOARD_BROKER_URL=broker_url, CALLBOARD_WORKER_SHUTDOWN_TIMEOUT="1")
    send("tb_slow", ["handback", 8])
    wait_until(lambda: entries("handback", "started"), message="the slow actor to start")
    # When the worker is stopped before the message can finish
    first.signal(signal.SIGTERM)
    assert first.wait(60) == 0
    assert not entries("handback", "done")
    # Then the message was handed back and a new worker runs it to the end
    start_worker(CALLBOARD_BROKER_URL=broker_url)
    wait_until(lambda: entries("handback", "done"), timeout=60, message="the handed-back message")
    assert len(entries("handback", "started")) == 2


def test_recycling_after_n_messages_loses_none(
    producer: Broker, broker_url: str, start_worker: StartWorker
) -> None:
    # Given two worker processes that recycle every 20 messages
    worker = start_worker(
        CALLBOARD_BROKER_URL=broker_url, CALLBOARD_WORKER_MAX_MESSAGES="20", CALLBOARD_WORKER_PROCESSES="2"
    )
    # When 3 x 20 x 2 messages are sent
    total = 120
    send_many("tb_record", [["recycle", n] for n in range(total)])
    # Then every one completes, and processes were recycled along the way
    wait_until(
        lambda: len({e["n"] for e in entries("recycle", "done")}) == total,
        timeout=90,
        message=f"{total} distinct completions",
    )
    assert len(worker.events("worker.recycled")) >= 2
    assert worker.process.poll() is None  # the supervisor itself keeps running


def test_stock_dramatiq_command_runs_the_same_stack(
    producer: Broker, broker_url: str, worker_env: dict[str, str]
) -> None:
    env = command_env({**worker_env, "CALLBOARD_BROKER_URL": broker_url})
    process = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "service.boot", "--processes", "1", "--threads", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        send("tb_record", ["stock"])
        send("tb_soft", ["stock-soft"])
        wait_until(lambda: entries("stock", "done"), timeout=60, message="the stock worker to run it")
        wait_until(lambda: entries("stock-soft", "cleanup"), timeout=30, message="the soft limit")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_a_busy_stock_dramatiq_worker_keeps_its_heartbeat_and_is_not_rescued(
    redis_url: str, worker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.brokers.rescue import rescue
    from tests.support.producer import producing_on

    with producing_on(redis_url, redis_url, tmp_path / "var", monkeypatch) as broker:
        # Given a stock worker (1 thread) whose thread is busy, whose prefetch is full and whose
        # delay-queue prefetch (1) a far-off delayed message fills, so that neither of its
        # consumers sends a fetch (Dramatiq's own heartbeat goes stale)
        send("tb_record", ["later"], delay=600)
        env = command_env(
            {
                **worker_env,
                "CALLBOARD_HEARTBEAT_TIMEOUT": "2",
                "CALLBOARD_HEARTBEAT_INTERVAL": "0.5",
                "dramatiq_delay_queue_prefetch": "1",
            }
        )
        command = ["service.boot", "--processes", "1", "--threads", "1", "--queues", QUEUE]
        process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", *command],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            send_many("tb_slow", [[f"busy-{n}", 3] for n in range(3)])
            wait_until(lambda: entries("busy-0", "started"), timeout=60, message="the first to start")
            # When rescuers run for longer than the heartbeat timeout while it works
            rescued: dict[str, int] = {}
            wait_until(
                lambda: rescued.update(rescue(broker, 2, min_uptime=0)) or entries("busy-0", "done"),
                timeout=30,
                message="the first to finish",
            )
            # Then nothing was taken from it, and each message runs once
            assert rescued == {}
            wait_until(lambda: entries("busy-2", "done"), timeout=30, message="the last to finish")
            assert [len(entries(f"busy-{n}", "started")) for n in range(3)] == [1, 1, 1]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
