"""The ``callboard`` command: bad input exits 2 with one line, ``send`` prints an id, ``dev``
keeps its embedded Redis data across restarts, ``db upgrade`` migrates."""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
import redis

from service.db.migrate import head_revision
from tests.support.ports import free_port_pair
from tests.support.processes import CallboardProcess, run_callboard
from tests.support.waiting import wait_until


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["send", "no_such_actor"], "unknown actor 'no_such_actor'"),
        (["send", "tb_record", "--args", "[1,"], "--args is not valid JSON"),
        (["send", "tb_record", "--args", '{"a": 1}'], "--args must be a JSON array"),
        (["send", "tb_record", "--kwargs", "[]"], "--kwargs must be a JSON object"),
        (["send", "tb_record", "--args", "[]"], "missing a required argument: 'tag'"),
        (["send", "tb_record", "--args", '["a", 1, 2]'], "too many positional arguments"),
        (["send", "tb_record", "--args", '["a"]', "--delay", "-1"], "--delay must not be negative"),
    ],
)
def test_bad_input_to_send_is_one_line_and_exit_2(
    worker_env: dict[str, str], args: list[str], expected: str
) -> None:
    result = run_callboard(*args, env=worker_env)
    assert result.returncode == 2
    assert expected in one_line_error(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALLBOARD_WORKER_THREADS", "many"),
        ("CALLBOARD_BROKER_URL", "ftp://x"),
        ("CALLBOARD_WORKER_MAX_MESSAGES", "-5"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(worker_env: dict[str, str], variable: str, value: str) -> None:
    for command in (["send", "tb_record", "--args", '["x"]'], ["worker"], ["actors"]):
        result = run_callboard(*command, env={**worker_env, variable: value})
        assert result.returncode == 2, (command, result.stderr)
        assert one_line_error(result.stderr).startswith(f"callboard: {variable}:")


def test_unknown_actor_module_is_one_line_and_exit_2(worker_env: dict[str, str]) -> None:
    result = run_callboard("worker", env={**worker_env, "CALLBOARD_ACTOR_MODULES": "no.such.module"})
    assert result.returncode == 2
    assert "no.such.module" in one_line_error(result.stderr)


def test_send_prints_the_message_id_and_the_broker_holds_it(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    from tests.support.actors import QUEUE

    result = run_callboard(
        "send",
        "tb_record",
        "--args",
        '["cli"]',
        "--kwargs",
        '{"n": 7}',
        "--request-id",
        "req-42",
        env=worker_env,
    )
    assert result.returncode == 0, result.stderr
    message_id = result.stdout.strip()
    [redis_id] = redis_client.lrange(f"dramatiq:{QUEUE}", 0, -1)
    body = json.loads(redis_client.hget(f"dramatiq:{QUEUE}.msgs", redis_id))
    assert body["message_id"] == message_id
    assert body["args"] == ["cli"] and body["kwargs"] == {"n": 7}
    assert body["options"]["request_id"] == "req-42"


def test_actors_lists_policies_as_json(worker_env: dict[str, str]) -> None:
    result = run_callboard("actors", "--json", env=worker_env)
    assert result.returncode == 0, result.stderr
    rows = {row["actor"]: row for row in json.loads(result.stdout)}
    assert rows["ping"]["queue"] == "critical" and rows["ping"]["policy"] == "critical"
    assert rows["tb_soft"]["soft_time_limit_s"] == 0.5


def test_actors_shows_each_shipped_actor_with_its_policy_settings(worker_env: dict[str, str]) -> None:
    from config.policies import POLICIES
    from config.settings import load_settings
    from service.runtime import SHIPPED_ACTOR_MODULES

    result = run_callboard("actors", "--json", env=worker_env)
    assert result.returncode == 0, result.stderr
    rows = [row for row in json.loads(result.stdout) if row["module"].startswith(SHIPPED_ACTOR_MODULES)]
    assert {row["actor"] for row in rows} >= {"ping", "send_email", "send_webhook", "prune_history"}
    for row in rows:
        policy = POLICIES[row["policy"]]
        assert row["queue"] == policy.queue, row
        assert row["max_retries"] == policy.max_retries, row
        assert (row["min_backoff_s"], row["max_backoff_s"]) == (policy.min_backoff, policy.max_backoff), row
        assert (row["soft_time_limit_s"], row["time_limit_s"]) == (policy.soft_time_limit, policy.time_limit)
        assert row["idempotency"] == (policy.idempotency_scope or "off"), row
        assert row["idempotency_ttl_s"] == policy.idempotency_ttl, row
        assert row["result_ttl_s"] == (policy.result_ttl or load_settings().result_ttl), row
        assert row["track_status"] is policy.track_status, row
    by_name = {row["actor"]: row for row in rows}
    assert by_name["send_email"]["circuit_breaker"] == "smtp"
    assert by_name["send_webhook"]["circuit_breaker"].startswith("per message")


@pytest.mark.parametrize("module", ["tests.support.duplicate_actors", "tests.support.duplicate_plain_actors"])
def test_an_actor_name_declared_twice_is_refused_naming_both(worker_env: dict[str, str], module: str) -> None:
    env = {**worker_env, "CALLBOARD_ACTOR_MODULES": module}
    result = run_callboard("actors", "--json", env=env)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert module in line and "'ping' is already registered" in line
    assert "first declared by actors.diagnostics:ping" in line


def _text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def _get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return int(response.status)


def test_dev_runs_workers_and_scheduler_on_embedded_redis_and_keeps_data_across_restarts(
    tmp_path: Path,
) -> None:
    env = {
        "CALLBOARD_DATA_DIR": str(tmp_path / "var"),
        "CALLBOARD_WORKER_PROCESSES": "1",
        "CALLBOARD_WORKER_THREADS": "2",
        "CALLBOARD_LOG_FORMAT": "json",
        "CALLBOARD_METRICS_PORT": str(port := free_port_pair()),
        "CALLBOARD_METRICS_HOST": "127.0.0.1",
    }
    # Given `callboard dev` consuming only the critical queue
    dev = CallboardProcess("dev", "--queues", "critical", env=env, log_path=tmp_path / "dev1.log")
    try:
        dev.wait_for_event("worker.started", timeout=60)
        dev.wait_for_event("scheduler.leader", timeout=60)  # dev runs the scheduler too
        # serving the workers' metrics and probes on the port, the scheduler's on the next one
        assert _get(port, "/healthz") == 200
        assert "callboard_worker_processes 1.0" in _text(port, "/metrics")
        wait_until(lambda: "callboard_scheduler_leader 1.0" in _text(port + 1, "/metrics"), timeout=20)
        # When a message is sent to another queue, and dev is stopped with Ctrl-C
        sent = run_callboard("send", "sleep", "--args", "[0]", env=env)
        assert sent.returncode == 0, sent.stderr
        ping = run_callboard("send", "ping", env=env)
        assert ping.returncode == 0, ping.stderr
        dev.wait_for_event("diagnostics.pong")
        dev.signal(signal.SIGINT)
        assert dev.wait(60) == 0
    finally:
        dev.stop()
    # Then a restarted dev finds the message and runs it
    again = CallboardProcess(
        "dev", env={**env, "CALLBOARD_LOG_LEVEL": "DEBUG"}, log_path=tmp_path / "dev2.log"
    )
    try:
        done = wait_until(
            lambda: [
                e
                for e in again.events("message.finished")
                if e.get("actor") == "sleep" and e.get("outcome") == "success"
            ],
            timeout=60,
            message="the message kept across the restart",
        )
        assert done[0]["message_id"] == sent.stdout.strip()
    finally:
        again.stop()


def test_dev_says_when_its_scheduler_exits(tmp_path: Path) -> None:
    # Given the scheduler's metrics port (the workers' port + 1) already taken
    port = free_port_pair()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        env = {
            "CALLBOARD_DATA_DIR": str(tmp_path / "var"),
            "CALLBOARD_WORKER_PROCESSES": "1",
            "CALLBOARD_WORKER_THREADS": "1",
            "CALLBOARD_LOG_FORMAT": "json",
            "CALLBOARD_METRICS_PORT": str(port),
            "CALLBOARD_METRICS_HOST": "127.0.0.1",
        }
        dev = CallboardProcess("dev", env=env, log_path=tmp_path / "dev.log")
        try:
            # Then dev says the scheduler is gone, naming the cause, and its workers keep running
            wait_until(
                lambda: "callboard dev: the scheduler exited with code" in dev.log_path.read_text(),
                timeout=60,
                message="the scheduler's exit reported",
            )
            text = dev.log_path.read_text()
            assert f"cannot listen on 127.0.0.1:{port + 1}" in text
            assert _get(port, "/healthz") == 200
        finally:
            dev.stop()


def test_db_upgrade_migrates_the_configured_database(database_url: str, tmp_path: Path) -> None:
    env = {"CALLBOARD_DATABASE_URL": database_url, "CALLBOARD_DATA_DIR": str(tmp_path)}
    first = run_callboard("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert f"revision {head_revision()}" in first.stdout
    again = run_callboard("db", "upgrade", env=env)  # idempotent
    assert again.returncode == 0 and f"revision {head_revision()}" in again.stdout


def test_db_upgrade_of_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {"CALLBOARD_DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:1/none"}
    result = run_callboard("db", "upgrade", env=env)
    assert result.returncode == 1
    assert "database upgrade failed" in one_line_error(result.stderr)
