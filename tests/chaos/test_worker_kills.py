"""Chaos scenarios 1, 2 and 7: workers killed or restarted under load lose nothing.

1. SIGKILL one worker process mid-batch (its threads busy, its prefetch full): the rescuer
   requeues what it held once its heartbeat is older than CALLBOARD_HEARTBEAT_TIMEOUT.
2. SIGKILL a whole pod (supervisor and worker processes), then start a new pod.
7. A rolling restart with SIGTERM under load: one pod stops gracefully while another runs, a new
   one starts, twice over.

Every scenario checks the completions ledger: every key completed, none missing; duplicates are
allowed only for messages the killed processes held (at-least-once), and none in scenario 7.
The measured figures are printed (``pytest -s``) and recorded in ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass

import psutil
import redis
from dramatiq import Broker

from service import send_many
from tests.integration.conftest import StartWorker
from tests.support import completions
from tests.support.chaos_actors import QUEUE
from tests.support.processes import CallboardProcess
from tests.support.waiting import wait_until

#: Short, so that recovery fits in a scenario's 60 s (the default is 30 s).
HEARTBEAT_TIMEOUT = 5.0

#: A pod: 2 worker processes x 4 threads (prefetch 8 each) on the chaos queue only.
POD = {
    "CALLBOARD_WORKER_PROCESSES": "2",
    "CALLBOARD_WORKER_THREADS": "4",
    "CALLBOARD_WORKER_QUEUES": QUEUE,
    "CALLBOARD_WORKER_MAX_MESSAGES": "0",
    "CALLBOARD_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
}


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a scenario measured, from the fault (or the first stop) on."""

    total: int
    seconds_to_all: float  # until every key was completed
    seconds_to_rescue: float | None  # until the first worker.rescued line, if any
    rescued: int  # messages requeued by the rescuer
    duplicated: dict[str, int]

    def line(self, scenario: str, since: str = "the kill") -> str:
        rescue = "-" if self.seconds_to_rescue is None else f"{self.seconds_to_rescue:.1f}s"
        return (
            f"[chaos {scenario}] {self.total} messages: all complete {self.seconds_to_all:.1f}s "
            f"after {since}; first rescue {rescue}; rescued {self.rescued}; "
            f"duplicates {len(self.duplicated)} {sorted(self.duplicated.values())}"
        )


def _send_load(count: int, low: float, high: float, seed: int) -> list[str]:
    """Send ``count`` tc_complete messages of ``low`` to ``high`` seconds; returns their keys."""
    rng = random.Random(seed)
    keys = [f"k{seed}-{n}" for n in range(count)]
    send_many("tc_complete", [[key, round(rng.uniform(low, high), 3)] for key in keys])
    return keys


def _in_flight(client: redis.Redis) -> dict[str, int]:
    """Fetched, unacked messages of the chaos queue per consumer broker (its ack set's size)."""
    found = {}
    for key in client.scan_iter(match=f"dramatiq:__acks__.*.{QUEUE}", count=1000):
        found[key.decode()] = int(client.scard(key))
    return found


def _worker_pids(pod: CallboardProcess, count: int) -> list[int]:
    """The pod's worker processes (the supervisor's children), once ``count`` run and consume."""
    pod.wait_for_event("worker.started", count=count, timeout=60)
    return wait_until(
        lambda: (
            len(children := psutil.Process(pod.process.pid).children()) == count
            and [child.pid for child in children]
        ),
        timeout=30,
        message=f"{count} worker processes",
    )


def _wait_busy(client: redis.Redis, consumers: int) -> None:
    """Wait until ``consumers`` consumers each hold 6+ messages (4 running, prefetch filling)."""
    wait_until(
        lambda: sum(1 for size in _in_flight(client).values() if size >= 6) >= consumers,
        timeout=30,
        message=f"{consumers} consumers busy with a full prefetch",
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _recover(
    ledger_url: str,
    keys: list[str],
    pods: list[CallboardProcess],
    since: float,
    within: float = HEARTBEAT_TIMEOUT + 30,
) -> Recovery:
    """Wait until every key completed, at most ``within`` seconds after ``since`` (by default
    the heartbeat timeout + 30 s)."""
    rescued_at: list[float] = []

    def all_done() -> bool:
        if not rescued_at and any(pod.events("worker.rescued") for pod in pods):
            rescued_at.append(time.monotonic() - since)
        return not completions.check(ledger_url, keys).missing

    budget = within - (time.monotonic() - since)
    wait_until(all_done, timeout=budget, interval=0.2, message=f"all {len(keys)} keys completed")
    took = time.monotonic() - since
    verdict = completions.check(ledger_url, keys)
    rescued = sum(line["count"] for pod in pods for line in pod.events("worker.rescued"))
    return Recovery(
        total=len(keys),
        seconds_to_all=took,
        seconds_to_rescue=rescued_at[0] if rescued_at else None,
        rescued=rescued,
        duplicated=verdict.duplicated,
    )


def test_sigkill_of_one_worker_process_mid_batch_loses_nothing(
    start_worker: StartWorker, chaos_producer: Broker, ledger_url: str, redis_client: redis.Redis
) -> None:
    # Given a pod of 2 processes x 4 threads working through 200 messages of 0.2-0.5 s
    pod = start_worker(**POD)
    pids = _worker_pids(pod, 2)
    keys = _send_load(200, 0.2, 0.5, seed=1)
    _wait_busy(redis_client, consumers=2)
    # When one worker process is SIGKILLed while its threads are busy and its prefetch is full
    os.kill(pids[0], signal.SIGKILL)
    killed_at = time.monotonic()
    # Then every message completes within the heartbeat timeout + 30 s
    recovery = _recover(ledger_url, keys, [pod], killed_at)
    print("\n" + recovery.line("1"))
    # because the rescuer requeued what the dead process held, and the supervisor replaced it
    assert recovery.rescued > 0
    assert pod.events("worker.crashed")
    # Duplicates only among the rescued messages (finished, but the ack never left), once each
    assert len(recovery.duplicated) <= recovery.rescued
    assert set(recovery.duplicated.values()) <= {2}


def test_sigkill_of_a_whole_pod_then_a_new_pod_loses_nothing(
    start_worker: StartWorker, chaos_producer: Broker, ledger_url: str, redis_client: redis.Redis
) -> None:
    # Given a pod of 2 processes x 4 threads working through 200 messages of 0.2-0.5 s
    old = start_worker(**POD)
    pids = [old.process.pid, *_worker_pids(old, 2)]
    keys = _send_load(200, 0.2, 0.5, seed=2)
    _wait_busy(redis_client, consumers=2)
    # When the whole pod is SIGKILLed (its process group: supervisor and workers)
    os.killpg(old.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    old.wait(10)
    wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=10, message="the old pod gone")
    # and a new pod starts
    new = start_worker(**POD)
    # Then the new pod rescues what the old one held, and every message completes
    recovery = _recover(ledger_url, keys, [new], killed_at)
    print("\n" + recovery.line("2"))
    assert recovery.rescued > 0
    assert {line["dead_worker"] for line in new.events("worker.rescued")}  # named in the log
    assert len(recovery.duplicated) <= recovery.rescued
    assert set(recovery.duplicated.values()) <= {2}


def test_rolling_restart_with_sigterm_under_load_loses_nothing(
    start_worker: StartWorker, chaos_producer: Broker, ledger_url: str
) -> None:
    # Given two pods of one process x 4 threads, working through 400 messages of 0.2-0.4 s
    pod = {**POD, "CALLBOARD_WORKER_PROCESSES": "1", "CALLBOARD_WORKER_SHUTDOWN_TIMEOUT": "30"}
    running = [start_worker(**pod), start_worker(**pod)]
    keys = _send_load(400, 0.2, 0.4, seed=7)
    wait_until(lambda: len(completions.ledger(ledger_url)) >= 20, timeout=30, message="the load going")
    started = time.monotonic()
    every = list(running)
    # When, twice, the oldest pod is stopped with SIGTERM while the other runs, and a new one starts
    for _ in range(2):
        oldest = running.pop(0)
        assert len(completions.ledger(ledger_url)) < len(keys), "the load ended before the restart"
        oldest.signal(signal.SIGTERM)
        assert oldest.wait(40) == 0
        fresh = start_worker(**pod)
        running.append(fresh)
        every.append(fresh)
    # Then every message completes, none twice: nothing was killed, so nothing needed rescuing
    recovery = _recover(ledger_url, keys, every, started, within=50)
    print("\n" + recovery.line("7", since="the first SIGTERM"))
    assert recovery.duplicated == {}
    assert recovery.rescued == 0
