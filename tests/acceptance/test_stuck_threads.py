"""A thread stuck in C code past its hard limit: after CALLBOARD_STUCK_RECYCLE_AFTER its process
recycles itself gracefully, the supervisor starts a replacement, and the stuck message is handed
back and runs again."""

from __future__ import annotations

from dramatiq import Broker

from service import send
from tests.integration.conftest import StartWorker
from tests.support.records import entries
from tests.support.waiting import wait_until


def test_a_thread_stuck_for_good_recycles_its_process(
    start_worker: StartWorker, redis_producer: Broker
) -> None:
    # Given a worker that recycles 2 s after a thread counts as stuck (hard limit + 10 s grace),
    # with a 2 s shutdown timeout
    worker = start_worker(
        CALLBOARD_STUCK_RECYCLE_AFTER="2",
        CALLBOARD_WORKER_SHUTDOWN_TIMEOUT="2",
        CALLBOARD_HEARTBEAT_INTERVAL="0.5",
    )
    # When an actor blocks in one C call for 45 s, past its 1 s hard limit
    send("tb_blocked", ["stuck", 45])
    first = wait_until(lambda: entries("stuck", "started"), timeout=30, message="the blocked actor")
    old_pid = first[0]["pid"]
    # Then, about 13 s later, its process decides to recycle and the supervisor replaces it
    (decided,) = worker.wait_for_event("worker.stuck_recycling", timeout=40)
    assert decided["pid"] == old_pid and decided["stuck"] == 1
    worker.wait_for_event("worker.recycled", timeout=20)
    # the old process stops after its shutdown timeout, handing the stuck message back
    handed = worker.wait_for_event("worker.handed_back", timeout=30)
    assert [(line["pid"], line["running"]) for line in handed] == [(old_pid, 1)]
    wait_until(
        lambda: any(line["pid"] == old_pid for line in worker.events("worker.stopped")),
        timeout=30,
        message="the old process to stop",
    )
    # and the replacement runs the message again, while the supervisor keeps going
    again = wait_until(lambda: entries("stuck", "started")[1:], timeout=30, message="the second run")
    assert again[0]["pid"] != old_pid
    assert worker.process.poll() is None
