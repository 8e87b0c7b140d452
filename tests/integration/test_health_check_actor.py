"""periodic_health_check on the run's real Redis and database: ok when healthy, the failing
checks named when not, one chained send_alert when critical; through a real worker, 100
identical critical checks give one alert per channel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Broker

from service.deadletters import store
from service.health import heartbeats
from service.sending import send
from tests.integration.conftest import StartWorker
from tests.support.ops import alert_env, enqueue_aged, ops_producer, queued
from tests.support.records import entries
from tests.support.waiting import wait_until


@pytest.fixture
def ops_env(redis_url: str, migrated_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "CALLBOARD_BROKER_URL": redis_url,
        "CALLBOARD_DATABASE_URL": migrated_database_url,
        "CALLBOARD_DATA_DIR": str(tmp_path / "var"),
        **alert_env(),
    }


@pytest.fixture
def monitored(
    ops_env: dict[str, str], redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    with ops_producer(ops_env, redis_url, tmp_path / "var", monkeypatch) as broker:
        yield broker


def check() -> dict[str, Any]:
    from actors.monitoring import periodic_health_check

    result: dict[str, Any] = periodic_health_check.fn()
    return result


def publish_worker(client: redis.Redis) -> None:
    data = {"queues": [], "threads": 4, "busy": 0, "stuck": 0}
    heartbeats.publish(client, "workers", heartbeats.Beat(id=heartbeats.new_id(), data=data))


def publish_leader(client: redis.Redis) -> None:
    data = {"leader": True, "token": 1, "entries": 3}
    heartbeats.publish(client, "schedulers", heartbeats.Beat(id=heartbeats.new_id(), data=data))


def alerts_queued(client: redis.Redis) -> list[dict[str, Any]]:
    return [m.kwargs for m in queued(client, "critical") if m.actor_name == "send_alert"]


def dead_row(message_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "dedupe_key": f"{message_id}:0", "message_id": message_id, "queue": "default",
        "actor": "tb_fail", "reason": "exhausted", "args": "[]", "kwargs": "{}", "options": "{}",
        "sealed_payload": None, "raw_body": None, "exception_type": "ValueError",
        "exception_message": "x", "traceback": None, "attempts": 4, "first_failed_at": now,
        "last_failed_at": now, "stored_at": now, "state": "dead", "requeue_count": 0,
    }  # fmt: skip


@pytest.mark.usefixtures("monitored")
def test_healthy_is_ok_and_sends_no_alert(redis_client: redis.Redis) -> None:
    publish_worker(redis_client)
    publish_leader(redis_client)
    result = check()
    assert result["status"] == "ok", result["problems"]
    assert result["problems"] == {} and "alert" not in result
    assert {"broker", "database", "workers", "scheduler", "queue:critical", "dead_letters"} <= set(
        result["checks"]
    )
    assert set(result["checks"].values()) == {"ok"}
    assert json.loads(json.dumps(result)) == result
    assert alerts_queued(redis_client) == []


def test_a_queue_over_its_sla_is_degraded_and_over_twice_its_sla_critical(
    monitored: Broker, redis_client: redis.Redis
) -> None:
    publish_worker(redis_client)
    publish_leader(redis_client)
    # Over its 30 s SLA (not twice): degraded, named, no alert
    enqueue_aged(monitored, "default", 45)
    result = check()
    assert result["status"] == "degraded"
    assert result["checks"]["queue:default"] == "degraded"
    assert "> SLA 30s" in result["problems"]["queue:default"]
    assert alerts_queued(redis_client) == []
    # Over twice its 60 s SLA: critical, and exactly one send_alert keyed by the failing check
    enqueue_aged(monitored, "reports", 600)
    result = check()
    assert result["status"] == "critical"
    assert result["checks"]["queue:reports"] == "critical"
    (sent,) = alerts_queued(redis_client)
    assert sent["level"] == "critical" and sent["dedupe_key"] == "health:queue:reports"
    assert set(sent["details"]) == {"queue:reports"}


@pytest.mark.usefixtures("monitored")
def test_no_live_worker_is_critical_with_one_alert_per_check(redis_client: redis.Redis) -> None:
    publish_leader(redis_client)
    first, second = check(), check()
    for result in (first, second):
        assert result["status"] == "critical"
        assert result["checks"]["workers"] == "critical"
        assert "no worker has sent a heartbeat" in result["problems"]["workers"]
    # Each check chains exactly one send_alert, both with the same key (send_alert dedupes)
    sent = alerts_queued(redis_client)
    assert len(sent) == 2 and {s["dedupe_key"] for s in sent} == {"health:workers"}


@pytest.mark.usefixtures("monitored")
def test_dead_letter_growth_since_the_last_check_is_named(redis_client: redis.Redis) -> None:
    publish_worker(redis_client)
    publish_leader(redis_client)
    assert check()["checks"]["dead_letter_growth"] == "ok"  # the first check sets the baseline
    store.store_new([dead_row(f"m{i}") for i in range(3)])
    grown = check()
    assert grown["status"] == "degraded"
    assert grown["checks"]["dead_letter_growth"] == "degraded"
    assert grown["problems"]["dead_letter_growth"].startswith("3 new since the last check")
    # The next check compares with what this one saw: no new growth
    assert check()["checks"]["dead_letter_growth"] == "ok"


def test_a_hundred_critical_checks_through_a_real_worker_give_one_alert_per_channel(
    ops_env: dict[str, str],
    monitored: Broker,
    redis_client: redis.Redis,
    start_worker: StartWorker,
) -> None:
    # Given a worker for the health check, send_alert and the channel stand-ins (not `reports`),
    # and a reports message waiting over twice its SLA
    env = {**ops_env, "CALLBOARD_ACTOR_MODULES": "tests.support.actors,tests.support.channel_standins"}
    start = start_worker("--queues", "critical,email,external_api", **env)
    wait_until(lambda: heartbeats.beats(redis_client, "workers"), message="the worker's heartbeat")
    publish_leader(redis_client)
    enqueue_aged(monitored, "reports", 600)
    # When the worker runs one health check: critical, and one chained send_alert is sent
    send("periodic_health_check")
    (checked,) = start.wait_for_event("health.checked")
    assert checked["status"] == "critical", checked["problems"]
    assert checked["checks"]["queue:reports"] == "critical"
    start.wait_for_event("alert.sent")
    # And 99 more identical checks within the minute (here in this process) chain 99 more
    for _ in range(99):
        assert check()["status"] == "critical"
    wait_until(
        lambda: len(start.events("alert.sent")) + len(start.events("alert.suppressed")) >= 100,
        timeout=60,
        message="100 send_alert runs",
    )
    # Then one was sent and 99 suppressed, and each channel ran exactly once
    assert len(start.events("alert.sent")) == 1
    assert len(start.events("alert.suppressed")) == 99
    wait_until(
        lambda: not queued(redis_client, "email") and not queued(redis_client, "external_api"),
        message="the channel messages to finish",
    )
    runs = entries("channels")
    assert sorted(run["what"] for run in runs) == ["email", "webhook", "webhook", "webhook"]
    assert len({run["url"] for run in runs if run["what"] == "webhook"}) == 3
    (email,) = (run for run in runs if run["what"] == "email")
    assert email["subject"] == "[CRITICAL] Callboard critical: queue:reports"
