"""Message status and progress against real Redis and real worker processes.

Transitions are read the way users read them, with ``service.status.status`` and the
``callboard status`` command; runs are counted in Redis by the actors (:mod:`tests.support.records`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from dramatiq import Broker

from service import send, status
from service.status.records import key
from tests.conftest import configure_process
from tests.integration.conftest import StartWorker
from tests.support import status_actors
from tests.support.processes import CallboardProcess, run_callboard
from tests.support.producer import adopt_actors
from tests.support.records import client, entries
from tests.support.waiting import wait_until

MODULES = "tests.support.actors,tests.support.status_actors"


@pytest.fixture
def env(
    worker_env: dict[str, str], redis_producer: Broker, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This process configured like the workers, producing the status test actors."""
    adopt_actors(status_actors, redis_producer)
    return configure_process({**worker_env, "CALLBOARD_ACTOR_MODULES": MODULES}, monkeypatch)


def start(start_worker: StartWorker, **env: str) -> CallboardProcess:
    return start_worker(CALLBOARD_ACTOR_MODULES=MODULES, **env)


def state_becomes(message_id: str, state: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until ``message_id``'s status is ``state``; returns the status."""
    return wait_until(
        lambda: (found := status(message_id)) is not None and found["state"] == state and found,
        timeout,
        message=f"{message_id} to be {state} (now {status(message_id)})",
    )


@pytest.mark.usefixtures("env")
def test_a_message_is_enqueued_then_started_then_succeeded(start_worker: StartWorker) -> None:
    # Given a message sent while no worker runs: the producer records it (in the background)
    message_id = send("ts_ok", ["ok"])
    waiting = state_becomes(message_id, "enqueued", timeout=10)
    assert waiting["actor"] == "ts_ok" and waiting["attempts"] == 0
    delayed = state_becomes(send("ts_ok", ["later"], delay=3600), "delayed", timeout=10)
    assert delayed["eta"] > delayed["updated_at"]
    # When a worker runs it
    start(start_worker)
    done = state_becomes(message_id, "succeeded")
    # Then it succeeded on its first attempt
    assert done["attempts"] == 1 and done["queue"] == waiting["queue"]
    assert status("0" * 32) is None


@pytest.mark.usefixtures("env")
def test_retry_then_success_records_the_retry_with_its_eta(start_worker: StartWorker) -> None:
    start(start_worker)
    message_id = send("ts_flaky", ["flaky"])
    # The first attempt fails: retrying, with the next attempt's time and the error
    retrying = state_becomes(message_id, "retrying")
    assert retrying["attempts"] == 1 and retrying["eta"] and "first attempt fails" in retrying["error"]
    # The second succeeds
    done = state_becomes(message_id, "succeeded")
    assert done["attempts"] == 2


@pytest.mark.usefixtures("env")
def test_a_dead_message_shows_its_reason_and_a_redacted_error(start_worker: StartWorker) -> None:
    start(start_worker)
    message_id = send("ts_doomed", ["doomed"], {"password": "hunter2-secret"})
    dead = state_becomes(message_id, "dead")
    assert dead["reason"] == "exhausted" and dead["attempts"] == 2
    assert "RuntimeError" in dead["error"] and "hunter2-secret" not in json.dumps(dead)


@pytest.mark.usefixtures("env")
def test_expired_and_skipped_duplicate_messages(start_worker: StartWorker) -> None:
    start(start_worker)
    # A message older than its max_age when a worker gets to it
    expired_id = send("ts_ok", ["stale"], delay=0.3, max_age=1)
    assert state_becomes(expired_id, "expired")["attempts"] == 1
    # The second message with an idempotency key already used is skipped as a duplicate
    first = send("ts_ok", ["keyed"], idempotency_key="once")
    state_becomes(first, "succeeded")
    second = send("ts_ok", ["keyed"], idempotency_key="once")
    assert state_becomes(second, "skipped")["reason"] == "duplicate"
    assert len(entries("stale")) == 0 and len(entries("keyed")) == 1


@pytest.mark.usefixtures("env")
def test_status_expires_after_its_ttl(start_worker: StartWorker, redis_client: redis.Redis) -> None:
    start(start_worker, CALLBOARD_STATUS_TTL="1s")
    message_id = send("ts_ok", ["short"])
    state_becomes(message_id, "succeeded")
    assert 0 < redis_client.pttl(key(message_id)) <= 1000
    wait_until(lambda: status(message_id) is None, timeout=10, message="the status to expire")


@pytest.mark.usefixtures("env")
def test_the_status_command_shows_a_message_and_exits_1_when_unknown(
    start_worker: StartWorker, env: dict[str, str]
) -> None:
    start(start_worker)
    message_id = send("ts_ok", ["shown"])
    state_becomes(message_id, "succeeded")
    shown = run_callboard("status", message_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "succeeded"
    table = run_callboard("status", message_id, env=env)
    assert table.returncode == 0 and "succeeded" in table.stdout and "ts_ok" in table.stdout
    # Unknown (or expired): exit 1 with one line; a malformed id is bad input (exit 2)
    gone = run_callboard("status", "0" * 32, env=env)
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1 and "no status" in gone.stderr
    bad = run_callboard("status", "not an id", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.usefixtures("env")
def test_untracked_actors_write_nothing(start_worker: StartWorker, redis_client: redis.Redis) -> None:
    start(start_worker)
    message_id = send("ts_untracked", ["quiet"])
    wait_until(lambda: entries("quiet"), timeout=30, message="the run")
    tracked = send("ts_ok", ["loud"])
    state_becomes(tracked, "succeeded")  # written after the untracked one finished
    assert not redis_client.exists(key(message_id)) and status(message_id) is None


@pytest.mark.usefixtures("env")
def test_a_message_that_runs_on_shows_started_until_it_ends(start_worker: StartWorker) -> None:
    # Nothing is written as an attempt starts: the writer's next flush finds it running
    start(start_worker)
    message_id = send("ts_waits", ["waits"])
    wait_until(lambda: entries("waits", "running"), timeout=30, message="the actor to start")
    running = state_becomes(message_id, "started", timeout=10)
    assert running["attempts"] == 1 and running["actor"] == "ts_waits" and "progress" not in running
    client().set("go:waits", 1)
    done = state_becomes(message_id, "succeeded")
    assert done["attempts"] == 1


@pytest.mark.usefixtures("env")
def test_progress_is_visible_mid_run(start_worker: StartWorker) -> None:
    start(start_worker)
    message_id = send("ts_steps", ["steps", 3])
    wait_until(lambda: entries("steps", "reported"), timeout=30, message="the first report")
    mid = wait_until(lambda: (found := status(message_id)) and found.get("progress") and found, timeout=10)
    assert mid["state"] == "started"
    assert mid["progress"] == {"current": 1, "total": 3, "note": "first step done"}
    client().set("go:steps", 1)
    done = state_becomes(message_id, "succeeded")
    assert done["progress"]["current"] == 3


@pytest.mark.usefixtures("env")
def test_a_flood_of_progress_calls_is_rate_limited(start_worker: StartWorker) -> None:
    start(start_worker)
    message_id = send("ts_flood", ["flood", 200_000])
    [flooded] = wait_until(lambda: entries("flood", "flooded"), timeout=60, message="the flood")
    # At most one write per flush interval while the loop ran (plus the first and last)
    allowed = flooded["seconds"] / flooded["interval"] + 3
    assert flooded["writes"] <= allowed, flooded
    assert flooded["writes"] < 200_000 / 100
    done = state_becomes(message_id, "succeeded")
    assert done["progress"] == {"current": 200_000, "total": 200_000}


def test_a_producers_late_write_never_hides_a_workers_record(redis_client: redis.Redis) -> None:
    from service.status.writer import StatusWriter

    worker, producer = (StatusWriter(redis_client, ttl=60, interval=0.05) for _ in range(2))
    # The worker's record lands first (the producer's flush is late)
    worker.end("m1", json.dumps({"message_id": "m1", "state": "succeeded", "attempts": 1}))
    worker.flush()
    producer.put({"message_id": "m1", "state": "enqueued", "attempts": 0}, only_if_new=True)
    producer.put({"message_id": "m2", "state": "enqueued", "attempts": 0}, only_if_new=True)
    producer.flush()
    assert json.loads(redis_client.get(key("m1")) or b"{}")["state"] == "succeeded"
    assert json.loads(redis_client.get(key("m2")) or b"{}")["state"] == "enqueued"
    # Within one process, a later change replaces a pending "enqueued"; never the reverse
    producer.put({"message_id": "m3", "state": "started", "attempts": 1})
    producer.put({"message_id": "m3", "state": "enqueued", "attempts": 0}, only_if_new=True)
    producer.flush()
    assert json.loads(redis_client.get(key("m3")) or b"{}")["state"] == "started"
    for writer in (worker, producer):
        writer.close()


def test_progress_refuses_bad_numbers_and_does_nothing_outside_an_actor() -> None:
    from service import progress

    with pytest.raises(ValueError, match="finite number"):
        progress(float("nan"), 10)
    with pytest.raises(ValueError, match="finite number"):
        progress(1, -1)
    progress(1, 10, note="no actor running: ignored")
