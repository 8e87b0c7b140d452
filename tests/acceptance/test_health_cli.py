"""``callboard health``: the real command against real servers, with heartbeats published by the test
(or by a real worker): exit 0 healthy, 1 degraded, 2 unhealthy, and bounded in time."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from dramatiq import Message

from config.settings import load_settings
from service.brokers.factory import build_broker
from service.health import heartbeats
from tests.support.ports import free_port
from tests.support.processes import run_callboard
from tests.support.waiting import wait_until


def publish_worker(client: redis.Redis, queues: list[str] | None = None, **data: Any) -> None:
    beat = heartbeats.Beat(
        id=heartbeats.new_id(), data={"queues": queues or [], "threads": 4, "busy": 0, "stuck": 0, **data}
    )
    heartbeats.publish(client, "workers", beat)


def publish_leader(client: redis.Redis) -> None:
    beat = heartbeats.Beat(id=heartbeats.new_id(), data={"leader": True, "token": 1, "entries": 3})
    heartbeats.publish(client, "schedulers", beat)


def health(env: dict[str, str], *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run ``callboard health --json``; its exit code and rows by component."""
    result = run_callboard("health", "--json", *args, env=env, timeout=30)
    assert result.stdout, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert row["status"] in {"healthy", "degraded", "unhealthy", "unknown"}, row
        assert isinstance(row["detail"], str) and "\n" not in row["detail"], row
    return result.returncode, {row["component"]: row for row in rows}


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield listener.getsockname()[1]


def test_everything_up_is_healthy_and_exits_0(worker_env: dict[str, str], redis_client: redis.Redis) -> None:
    # Given a live worker consuming every queue and a scheduler leader
    publish_worker(redis_client)
    publish_leader(redis_client)

    # When an operator checks health
    code, rows = health(worker_env)

    # Then every component is healthy, each catalogue queue is shown, and the JSON carries figures
    assert code == 0, rows
    assert {row["status"] for row in rows.values()} == {"healthy"}
    assert list(rows)[:4] == ["broker", "database", "workers", "scheduler"]
    assert list(rows)[-1] == "dead_letters"
    assert {"queue:critical", "queue:default", "queue:maintenance"} <= set(rows)
    assert rows["workers"]["processes"] == 1 and rows["workers"]["queues"] == "all"
    assert rows["scheduler"]["entries"] == 3 and rows["scheduler"]["last_tick_age_s"] < 30
    assert rows["queue:critical"]["sla_s"] == 2 and rows["queue:critical"]["consumers"] == 1
    assert rows["dead_letters"]["recent"] == 0 and rows["broker"]["kind"] == "redis"


def test_the_table_is_aligned_and_ends_with_the_overall_status(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    publish_worker(redis_client)
    publish_leader(redis_client)

    result = run_callboard("health", env=worker_env, timeout=30)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["component", "status", "detail"]
    status_column = lines[0].index("status")
    assert all(line[status_column:].startswith("healthy") for line in lines[1:-1]), result.stdout
    assert lines[-1] == "overall: healthy"


def test_an_unreachable_broker_is_unhealthy_and_exits_2(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    env = {**worker_env, "CALLBOARD_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}

    code, rows = health(env)

    assert code == 2
    assert rows["broker"]["status"] == "unhealthy" and "unreachable" in rows["broker"]["detail"]
    # What lives on the broker is not read again; the database still is
    assert rows["workers"]["status"] == "unknown" and rows["queues"]["status"] == "unknown"
    assert rows["dead_letters"]["status"] == "healthy"


def test_a_black_holed_broker_costs_one_probe_timeout(worker_env: dict[str, str], black_hole: int) -> None:
    # Given a broker address that accepts connections and never answers
    env = {**worker_env, "CALLBOARD_BROKER_URL": f"redis://127.0.0.1:{black_hole}/0"}

    # When an operator checks health
    started = time.monotonic()
    code, rows = health(env)
    elapsed = time.monotonic() - started

    # Then it answers unhealthy well within ten seconds
    assert code == 2 and rows["broker"]["status"] == "unhealthy", rows["broker"]
    assert elapsed < 10, f"callboard health took {elapsed:.1f}s"


def test_an_unreachable_database_is_unhealthy_and_exits_2(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    publish_worker(redis_client)
    publish_leader(redis_client)
    env = {
        **worker_env,
        "CALLBOARD_DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/test",
    }

    code, rows = health(env)

    assert code == 2
    assert rows["database"]["status"] == "unhealthy" and rows["database"]["dialect"] == "postgresql"
    assert rows["dead_letters"]["status"] == "unknown"
    assert rows["workers"]["status"] == "healthy" and rows["broker"]["status"] == "healthy"


def test_no_live_worker_is_unhealthy_and_exits_2(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    # Given a scheduler leader and no worker at all
    publish_leader(redis_client)

    code, rows = health(worker_env)

    assert code == 2
    assert rows["workers"]["status"] == "unhealthy" and rows["workers"]["processes"] == 0
    assert rows["scheduler"]["status"] == "healthy"


def test_no_scheduler_seen_is_degraded_and_exits_1(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    publish_worker(redis_client)

    code, rows = health(worker_env)

    assert code == 1
    assert rows["scheduler"]["status"] == "degraded"
    assert [name for name, row in rows.items() if row["status"] != "healthy"] == ["scheduler"]


@pytest.mark.parametrize(("age", "code", "status"), [(40, 1, "degraded"), (70, 2, "unhealthy")])
def test_a_queue_over_its_sla_is_degraded_and_over_twice_unhealthy(
    worker_env: dict[str, str], redis_url: str, redis_client: redis.Redis, age: int, code: int, status: str
) -> None:
    # Given live workers and a leader, and a message that has waited `age` s on `default` (SLA 30 s)
    publish_worker(redis_client)
    publish_leader(redis_client)
    broker = build_broker(load_settings(), url=redis_url)
    try:
        broker.declare_queue("default")
        enqueued = int((time.time() - age) * 1000)
        broker.enqueue(Message("default", "sleep", (0,), {}, {}, message_timestamp=enqueued))
    finally:
        broker.close()

    # When an operator checks health
    exit_code, rows = health(worker_env)

    # Then that queue alone is over its SLA
    assert exit_code == code, rows
    row = rows["queue:default"]
    assert row["status"] == status and row["waiting"] == 1 and row["oldest_age_s"] >= age
    assert "SLA" in row["detail"]
    assert [name for name, r in rows.items() if r["status"] != "healthy"] == ["queue:default"]


def test_waiting_messages_no_live_worker_consumes_degrade_their_queue(
    worker_env: dict[str, str], redis_url: str, redis_client: redis.Redis
) -> None:
    # Given a live worker that only consumes `email`, and a fresh message on `reports`
    publish_worker(redis_client, queues=["email"])
    publish_leader(redis_client)
    broker = build_broker(load_settings(), url=redis_url)
    try:
        broker.declare_queue("reports")
        broker.enqueue(Message("reports", "sleep", (0,), {}, {}))
    finally:
        broker.close()

    code, rows = health(worker_env)

    assert code == 1
    assert rows["queue:reports"]["status"] == "degraded" and rows["queue:reports"]["consumers"] == 0
    assert "no live worker consumes it" in rows["queue:reports"]["detail"]


@pytest.mark.rabbitmq
def test_rabbitmq_without_a_state_redis_reports_workers_unknown(
    worker_env: dict[str, str], amqp_server_url: str, redis_url: str, redis_client: redis.Redis
) -> None:
    # Given RabbitMQ as the broker and no CALLBOARD_REDIS_URL: heartbeats cannot be read
    env = {**worker_env, "CALLBOARD_BROKER_URL": amqp_server_url}
    code, rows = health(env)
    assert code == 1, rows  # unknown counts as degraded
    assert rows["broker"]["status"] == "healthy" and rows["broker"]["kind"] == "rabbitmq"
    assert rows["workers"]["status"] == "unknown" and rows["scheduler"]["status"] == "unknown"

    # When a state Redis holding the heartbeats is configured
    publish_worker(redis_client)
    publish_leader(redis_client)
    code, rows = health({**env, "CALLBOARD_REDIS_URL": redis_url})

    # Then workers and scheduler are judged from it
    assert rows["workers"]["status"] == "healthy" and rows["scheduler"]["status"] == "healthy"


def test_a_real_worker_is_seen_through_its_heartbeat(
    worker_env: dict[str, str], redis_client: redis.Redis, start_worker: Any
) -> None:
    # Given a scheduler leader and a real worker
    publish_leader(redis_client)
    start_worker()

    # Then health sees the worker's own heartbeat
    def seen() -> dict[str, Any] | None:
        _, rows = health(worker_env)
        return rows["workers"] if rows["workers"]["status"] == "healthy" else None

    workers = wait_until(seen, timeout=30, interval=0.5, message="the worker's heartbeat")
    assert workers["processes"] == 1 and workers["threads"] == 4
