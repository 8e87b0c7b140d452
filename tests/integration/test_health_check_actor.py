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
from pytest_httpserver import HTTPServer

from service.deadletters import store
from service.health import heartbeats
from service.sending import send
from tests.integration.conftest import StartWorker
from tests.support.ops import alert_env, enqueue_aged, ops_producer, queued
from tests.support.smtp import SmtpServer, smtp_server
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


@pytest.fixture
def mail() -> Iterator[SmtpServer]:
    """A real SMTP server on 127.0.0.1 for the alert emails."""
    with smtp_server() as server:
        yield server


def test_a_hundred_critical_checks_through_a_real_worker_give_one_alert_per_channel(
    receiver: HTTPServer,
    mail: SmtpServer,
    ops_env: dict[str, str],
    monitored: Broker,
    redis_client: redis.Redis,
    start_worker: StartWorker,
) -> None:
    # Given a worker for the health check, send_alert and the real channel actors (not
    # `reports`), delivering to a real SMTP server and a real HTTP server, and a reports message
    # waiting over twice its SLA
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    hooks = [receiver.url_for(f"/hook?n={n}") for n in range(3)]
    env = {
        **ops_env,
        "CALLBOARD_ALERT_WEBHOOKS": ",".join(hooks[:2]),
        "CALLBOARD_ALERT_SLACK_WEBHOOK": hooks[2],
        "CALLBOARD_SMTP_HOST": "127.0.0.1",
        "CALLBOARD_SMTP_PORT": str(mail.port),
        "CALLBOARD_SMTP_STARTTLS": "false",
        "CALLBOARD_WEBHOOK_SECRET": "test-webhook-secret",
        "CALLBOARD_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    }
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
    # (the real channel actors delivered one email and three webhook calls)
    wait_until(lambda: len(mail.handler.received) >= 1, timeout=30, message="the alert email")
    wait_until(lambda: len(receiver.log) >= 3, timeout=30, message="the three webhook calls")
    assert len(mail.handler.received) == 1 and len(receiver.log) == 3
    (email,) = mail.handler.received
    assert sorted(email.recipients) == sorted(alert_env()["CALLBOARD_ALERT_EMAILS"].split(","))
    assert email.message["Subject"] == "[CRITICAL] Callboard critical: queue:reports"
    assert sorted(request.args["n"] for request, _ in receiver.log) == ["0", "1", "2"]
