"""The scheduler daemon as whole processes: two replicas and a SIGKILLed leader, catch-up after a
restart by policy, refusal of an invalid schedule, and reloads."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import StartWorker
from tests.support import records
from tests.support.actors import QUEUE
from tests.support.processes import CallboardProcess, run_callboard
from tests.support.records import entries
from tests.support.waiting import wait_until


def schedule_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "schedule.toml"
    path.write_text('[defaults]\ntimezone = "UTC"\n\n' + body)
    return path


def entry(name: str, catchup: str, every: str = "1s", window: str = "1m") -> str:
    return (
        f'[entries.{name}]\nactor = "tb_record"\nevery = "{every}"\nargs = ["{name}"]\n'
        f'catchup = "{catchup}"\ncatchup_window = "{window}"\nexpires = "1h"\n\n'
    )


def sent_slots(client: redis.Redis, name: str) -> list[datetime]:
    """The ``scheduled_at`` of every message of entry ``name`` waiting in the test queue."""
    slots = []
    for body in client.hvals(f"dramatiq:{QUEUE}.msgs"):
        message = json.loads(body)
        if message["options"].get("schedule_entry") == name:
            slots.append(datetime.fromisoformat(message["options"]["scheduled_at"]))
    return sorted(slots)


@pytest.fixture
def scheduler_env(worker_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**worker_env, "CALLBOARD_SCHEDULER_LEASE": "3"}


def start(env: dict[str, str], tmp_path: Path, label: str) -> CallboardProcess:
    return CallboardProcess("scheduler", env=env, log_path=tmp_path / f"scheduler-{label}.log")


def test_two_replicas_send_every_slot_even_when_the_leader_is_killed(
    scheduler_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, entry("tick", "all")))}
    # Given a leader and a standby, with an every-second entry
    first = start(env, tmp_path, "a")
    second = None
    try:
        first.wait_for_event("scheduler.leader", timeout=60)
        second = start(env, tmp_path, "b")
        second.wait_for_event("scheduler.started", timeout=60)
        wait_until(lambda: len(sent_slots(redis_client, "tick")) >= 6, timeout=30, message="6 slots sent")
        assert not second.events("scheduler.leader")
        # When the leader is killed without warning
        first.process.send_signal(signal.SIGKILL)
        first.wait(10)
        # Then the standby takes over within the lease (3 s) plus a renewal period
        second.wait_for_event("scheduler.leader", timeout=10)
        before = len(sent_slots(redis_client, "tick"))
        wait_until(
            lambda: len(sent_slots(redis_client, "tick")) >= before + 4,
            timeout=30,
            message="4 more slots from the new leader",
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
    # And every second from the first slot to the last was sent
    slots = sent_slots(redis_client, "tick")
    gaps = {(b - a).total_seconds() for a, b in pairwise(sorted(set(slots)))}
    assert gaps == {1.0}, f"slots missing: {gaps}"
    # And a slot was sent twice only if the killed leader sent it without recording it (it died
    # in between: the new leader cannot tell that from "died before sending" and sends it); the
    # copies share the slot's idempotency key, so a worker runs it once (chaos scenario 5)
    recorded = {datetime.fromisoformat(line["slot"]) for line in first.events("schedule.fired")}
    twice = {slot for slot in slots if slots.count(slot) > 1}
    assert len(twice) <= 1 and not twice & recorded, f"sent twice: {sorted(twice)}"


@pytest.mark.parametrize(("policy", "expected"), [("latest", 1), ("skip", 0), ("all", "each")])
def test_a_restart_within_the_window_catches_up_by_policy(
    scheduler_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis, policy: str, expected: object
) -> None:
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, entry("tock", policy)))}
    first = start(env, tmp_path, "1")
    try:
        first.wait_for_event("scheduler.leader", timeout=60)
        wait_until(lambda: len(sent_slots(redis_client, "tock")) >= 2, timeout=30, message="2 slots")
    finally:
        first.signal(signal.SIGTERM)
        first.wait(30)
        first.stop()
    before = sent_slots(redis_client, "tock")
    # Down for 6 s: the slots of that time are missed (the last 2 s count as on time)
    wait_until(
        lambda: (datetime.now(before[-1].tzinfo) - before[-1]).total_seconds() > 6,
        timeout=10,
        message="6 s down",
    )
    again = start(env, tmp_path, "2")
    try:
        again.wait_for_event("schedule.fired", timeout=60)
        if expected == "each":  # the catch-up pass sends one slot after another
            wait_until(
                lambda: len([e for e in again.events("schedule.fired") if e["outcome"] == "caught_up"]) >= 3,
                timeout=30,
                message="3 caught-up slots",
            )
        # A few more on-time fires, so a late catch-up would show
        wait_until(lambda: len(again.events("schedule.fired")) >= 4, timeout=30, message="4 fires")
        caught_up = [line for line in again.events("schedule.fired") if line["outcome"] == "caught_up"]
    finally:
        again.stop()
    if expected == "each":
        assert len(caught_up) >= 3
        slots = sent_slots(redis_client, "tock")
        gaps = {(b - a).total_seconds() for a, b in pairwise(slots)}
        assert gaps == {1.0}
    else:
        assert len(caught_up) == expected


def test_an_unknown_actor_stops_the_scheduler_naming_the_entry(
    scheduler_env: dict[str, str], tmp_path: Path
) -> None:
    body = '[entries.broken]\nactor = "no_such_actor"\nevery = "1m"\n'
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, body))}
    result = run_callboard("scheduler", env=env)
    assert result.returncode == 1
    assert "broken" in result.stderr and "no_such_actor" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_invalid_reload_keeps_the_running_schedule(
    scheduler_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    path = schedule_file(tmp_path, entry("steady", "skip"))
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(path)}
    process = start(env, tmp_path, "reload")
    try:
        process.wait_for_event("scheduler.leader", timeout=60)
        path.write_text(path.read_text() + '[entries.bad]\nactor = "no_such_actor"\nevery = "1s"\n')
        process.signal(signal.SIGHUP)
        failed = process.wait_for_event("schedule.reload_failed", timeout=30)
        assert "no_such_actor" in failed[0]["error"]
        count = len(sent_slots(redis_client, "steady"))
        wait_until(
            lambda: len(sent_slots(redis_client, "steady")) >= count + 2,
            timeout=30,
            message="the old schedule still firing",
        )
    finally:
        process.stop()


def test_overlap_skip_never_starts_a_run_while_the_last_one_is_running(
    scheduler_env: dict[str, str],
    tmp_path: Path,
    start_worker: StartWorker,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(records.RECORD_URL_VARIABLE, redis_url)
    records._client = None
    body = (
        '[entries.slow]\nactor = "tb_slow"\nevery = "1s"\nargs = ["overlap", 2.5]\n'
        'overlap = "skip"\ncatchup = "skip"\nexpires = "1m"\n'
    )
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, body))}
    start_worker()
    process = start(env, tmp_path, "overlap")
    try:
        process.wait_for_event("scheduler.leader", timeout=60)
        wait_until(lambda: len(entries("overlap", "done")) >= 3, timeout=60, message="3 runs done")
        assert process.events("schedule.skipped_overlap")
    finally:
        process.stop()
    # Every run started after the previous one was done
    starts = [e["at"] for e in entries("overlap", "started")]
    dones = [e["at"] for e in entries("overlap", "done")]
    assert all(start >= done for start, done in zip(starts[1:], dones, strict=False)), (starts, dones)


def test_a_changed_file_is_reloaded_without_a_signal(
    scheduler_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    path = schedule_file(tmp_path, entry("first", "skip"))
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(path)}
    process = start(env, tmp_path, "change")
    try:
        process.wait_for_event("scheduler.leader", timeout=60)
        path.write_text(path.read_text() + entry("second", "skip"))
        process.wait_for_event("schedule.reloaded", timeout=30)
        wait_until(lambda: sent_slots(redis_client, "second"), timeout=30, message="the new entry firing")
    finally:
        process.stop()


def test_operators_list_run_pause_resume_and_read_history(
    scheduler_env: dict[str, str], tmp_path: Path, redis_client: redis.Redis
) -> None:
    body = (
        entry("ops", "skip")
        + entry("witness", "skip")
        + (
            '[entries.nightly]\nactor = "tb_record"\ncron = "30 3 * * *"\n'
            'timezone = "Europe/Berlin"\nargs = ["nightly"]\n'
        )
    )
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, body))}

    def cli(*args: str) -> object:
        result = run_callboard("schedule", *args, "--json", env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    # list: the next three fires in the entry's own zone
    rows = {row["name"]: row for row in cli("list")}  # type: ignore[union-attr]
    nightly = [datetime.fromisoformat(moment) for moment in rows["nightly"]["next"]]
    assert len(nightly) == 3 and all((m.hour, m.minute) == (3, 30) for m in nightly)
    assert all(m.utcoffset() in {timedelta(hours=1), timedelta(hours=2)} for m in nightly)
    # run: fires once now, outside the timetable, and the history shows it
    [ran] = cli("run", "nightly")  # type: ignore[misc]
    assert any(s for s in sent_slots(redis_client, "nightly"))
    [fire] = cli("history", "nightly")  # type: ignore[misc]
    assert fire["outcome"] == "manual" and fire["message_id"] == ran["message_id"]
    # pause: a running daemon stops firing the entry; resume: it fires again
    cli("pause", "ops")
    process = start(env, tmp_path, "ops")
    try:
        process.wait_for_event("scheduler.leader", timeout=60)
        # The witness, fired every second like "ops", proves time passed while "ops" was paused
        wait_until(
            lambda: len(sent_slots(redis_client, "witness")) >= 3, timeout=30, message="3 witness fires"
        )
        paused = [row for row in cli("list") if row["name"] == "ops"]  # type: ignore[union-attr]
        assert paused[0]["paused"] is True
        assert not sent_slots(redis_client, "ops")
        cli("resume", "ops")
        wait_until(lambda: sent_slots(redis_client, "ops"), timeout=30, message="the resumed entry firing")
    finally:
        process.stop()
    assert run_callboard("schedule", "pause", "nope", env=env).returncode == 2
