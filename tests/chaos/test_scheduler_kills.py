"""Chaos scenario 5: the scheduler leader is SIGKILLed during fires, twice.

Two replicas hold an every-second entry (catch-up ``all``); the test kills whichever leads at a
random moment, starts a replacement, and does it again. A slot claimed by a killed leader but not
sent is resent by the next leader, and the slots of the gap are caught up: every slot from the
first to the last completes, through a real worker, in the completions ledger. A slot the killed
leader had sent but not yet recorded is sent again; its ``idempotency_key`` (``<entry>:<slot>``)
makes the worker skip the copy, so no slot runs twice.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

from tests.integration.conftest import StartWorker
from tests.support import completions
from tests.support.chaos_actors import QUEUE
from tests.support.processes import CallboardProcess
from tests.support.waiting import wait_until

ENTRY = "tick"
KILLS = 2


def _slots(ledger: dict[str, int]) -> dict[datetime, int]:
    return {
        datetime.fromisoformat(key.split("@", 1)[1]): runs
        for key, runs in ledger.items()
        if key.startswith(f"{ENTRY}@")
    }


def test_every_slot_runs_when_the_leader_is_killed_during_fires(
    worker_env: dict[str, str], start_worker: StartWorker, ledger_url: str, tmp_path: Path
) -> None:
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(
        '[defaults]\ntimezone = "UTC"\n\n'
        f'[entries.{ENTRY}]\nactor = "tc_slot"\nevery = "1s"\nargs = ["{ENTRY}"]\n'
        'catchup = "all"\ncatchup_window = "1m"\nexpires = "1m"\n'
    )
    env = {**worker_env, "CALLBOARD_SCHEDULER_LEASE": "3", "CALLBOARD_SCHEDULE_FILE": str(schedule)}
    start_worker(CALLBOARD_WORKER_QUEUES=QUEUE, CALLBOARD_WORKER_PROCESSES="1")
    replicas: list[CallboardProcess] = []

    def replica() -> CallboardProcess:
        process = CallboardProcess("scheduler", env=env, log_path=tmp_path / f"scheduler-{len(replicas)}.log")
        replicas.append(process)
        return process

    try:
        # Given a leader and a standby firing an every-second entry into a worker
        leader = replica()
        leader.wait_for_event("scheduler.leader", timeout=60)
        standby = replica()
        standby.wait_for_event("scheduler.started", timeout=60)
        wait_until(lambda: len(completions.ledger(ledger_url)) >= 3, timeout=30, message="3 slots done")

        takeovers = []
        for _ in range(KILLS):
            # When the leader is SIGKILLed at a random moment of a second (mid-fire or not)
            time.sleep(random.uniform(0.0, 1.0))  # a random phase, not a wait for a condition
            leader.process.send_signal(signal.SIGKILL)
            leader.wait(10)
            killed_at = time.monotonic()
            standby.wait_for_event("scheduler.leader", timeout=15)
            takeovers.append(time.monotonic() - killed_at)
            leader, standby = standby, replica()
            standby.wait_for_event("scheduler.started", timeout=60)
            done = len(completions.ledger(ledger_url))
            wait_until(
                lambda done=done: len(completions.ledger(ledger_url)) >= done + 3,
                timeout=30,
                message="more slots",
            )

        # Then every slot from the first to the last completed, none missing
        last = max(_slots(completions.ledger(ledger_url)))
        wait_until(
            lambda: _missing(_slots(completions.ledger(ledger_url)), last) == [],
            timeout=30,
            message="every slot up to the last",
        )
        slots = _slots(completions.ledger(ledger_url))
        duplicated = {slot: runs for slot, runs in slots.items() if runs > 1}
        span = [slot for slot in slots if slot <= last]
        assert duplicated == {}, "a slot ran twice"
        print(
            f"[chaos 5] {len(span)} slots over {KILLS} leader kills: takeovers "
            f"{', '.join(f'{t:.1f}s' for t in takeovers)} after the kill (lease 3 s); missing 0; "
            "run twice 0"
        )
    finally:
        for process in replicas:
            process.stop()


def _missing(slots: dict[datetime, int], last: datetime) -> list[datetime]:
    """The seconds between the first slot and ``last`` that did not complete."""
    moment, missing = min(slots), []
    while moment <= last:
        if moment not in slots:
            missing.append(moment)
        moment += timedelta(seconds=1)
    return missing
