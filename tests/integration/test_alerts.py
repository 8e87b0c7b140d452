"""send_alert against the run's real Redis: one message per channel per dedupe window, a new
alert for a new key or after the window, fail-open when the dedupe store is down, redaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Broker
from prometheus_client import REGISTRY

from service.alerts.channels import AlertLevelError
from tests.support.ops import EMAILS, SLACK, WEBHOOKS, alert_env, ops_producer, queued
from tests.support.ports import free_port
from tests.support.waiting import wait_until


@pytest.fixture
def alerting(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    env = {"CALLBOARD_BROKER_URL": redis_url, **alert_env()}
    with ops_producer(env, redis_url, tmp_path / "var", monkeypatch) as broker:
        yield broker


def alert(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from actors.notifications.alerts import send_alert

    result: dict[str, Any] = send_alert.fn(*args, **kwargs)
    return result


def channel_counts(client: redis.Redis) -> tuple[int, int]:
    """Messages queued for send_email and for send_webhook."""
    return len(queued(client, "email")), len(queued(client, "external_api"))


def counted(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("callboard_alerts_total", {"level": "critical", "outcome": outcome}) or 0.0
    )


@pytest.mark.usefixtures("alerting")
def test_a_hundred_identical_alerts_give_one_message_per_channel(redis_client: redis.Redis) -> None:
    # Given three channels: two addresses (one email), two webhooks, a Slack webhook
    suppressed_before = counted("suppressed")
    # When the same critical alert is raised 100 times
    results = [alert("critical", "Database down", {"since": "12:00"}) for _ in range(100)]
    # Then one is sent, 99 are suppressed and counted, and each channel got one message
    assert [r["outcome"] for r in results].count("sent") == 1
    assert results[0]["outcome"] == "sent" and results[0]["dedupe"] == "first"
    assert counted("suppressed") - suppressed_before == 99
    assert channel_counts(redis_client) == (1, 3)
    (email,) = queued(redis_client, "email")
    assert email.actor_name == "send_email"
    assert email.kwargs["to"] == EMAILS.split(",")
    assert email.kwargs["subject"] == "[CRITICAL] Database down"
    hooks = {m.kwargs["url"]: m.kwargs["payload"] for m in queued(redis_client, "external_api")}
    assert set(hooks) == {*WEBHOOKS.split(","), SLACK}
    generic = hooks[WEBHOOKS.split(",")[0]]
    assert (generic["level"], generic["title"], generic["details"]) == (
        "critical",
        "Database down",
        {"since": "12:00"},
    )
    assert hooks[SLACK]["text"] == "[CRITICAL] Database down" and hooks[SLACK]["blocks"]

    # A title that differs only in case and spacing is the same alert
    assert alert("critical", "  database   DOWN ", "again")["outcome"] == "suppressed"
    # A different title, or the same title at another level, is a new alert on every channel
    assert alert("critical", "Broker down", None)["outcome"] == "sent"
    assert alert("warning", "Database down", None)["outcome"] == "sent"
    assert channel_counts(redis_client) == (3, 9)
    # A given dedupe key wins over the title
    assert alert("critical", "Disk 91% full", None, dedupe_key="disk:/var")["outcome"] == "sent"
    assert alert("critical", "Disk 92% full", None, dedupe_key="disk:/var")["outcome"] == "suppressed"


def test_after_the_window_the_same_alert_is_sent_again(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"CALLBOARD_BROKER_URL": redis_url, **alert_env(CALLBOARD_ALERT_DEDUPE_WINDOW="0.5s")}
    with ops_producer(env, redis_url, tmp_path / "var", monkeypatch):
        assert alert("critical", "Queue stuck", None)["outcome"] == "sent"
        # Repeats are suppressed until the window ends; then the next one is sent
        wait_until(lambda: alert("critical", "Queue stuck", None)["outcome"] == "sent", timeout=10)
        assert channel_counts(redis_client) == (2, 6)


def test_an_unreachable_dedupe_store_sends_every_alert(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a shared-state Redis that refuses connections (the broker still works)
    env = {
        "CALLBOARD_BROKER_URL": redis_url,
        "CALLBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        **alert_env(),
    }
    with ops_producer(env, redis_url, tmp_path / "var", monkeypatch):
        # When the same alert is raised twice, then both are sent: a duplicate beats a loss
        results = [alert("critical", "Redis down", None) for _ in range(2)]
        assert [(r["outcome"], r["dedupe"]) for r in results] == [("sent", "unavailable")] * 2
        assert channel_counts(redis_client) == (2, 6)


@pytest.mark.usefixtures("alerting")
def test_sensitive_details_never_reach_a_channel(redis_client: redis.Redis) -> None:
    details = {"user_email": "ann@example.com", "api_key": "sk-live-123456", "host": "db-1"}
    alert("critical", "Login failures token=abcdef123456", details)
    bodies = [m.encode().decode() for queue in ("email", "external_api") for m in queued(redis_client, queue)]
    assert len(bodies) == 4
    for body in bodies:
        assert "ann@example.com" not in body and "sk-live-123456" not in body and "abcdef123456" not in body
        assert "db-1" in body and "[redacted]" in body


@pytest.mark.usefixtures("alerting")
def test_a_bad_level_is_refused_and_not_retried(redis_client: redis.Redis) -> None:
    from actors.notifications.alerts import send_alert

    with pytest.raises(AlertLevelError, match="level must be one of info, warning, critical"):
        alert("fatal", "x", None)
    assert AlertLevelError in send_alert.options["throws"]
    assert channel_counts(redis_client) == (0, 0)
    assert redis_client.keys("callboard:alerts:dedupe:*") == []


@pytest.mark.usefixtures("alerting")
def test_the_dead_letter_notice_becomes_a_warning_alert_once(redis_client: redis.Redis) -> None:
    from actors.notifications.alerts import dead_letter_alert
    from service.sending import check_arguments

    # The keyword arguments the dead-letter store sends to CALLBOARD_DLQ_ALERT_ACTOR fit it
    notice = {
        "actor": "charge_card",
        "queue": "default",
        "reason": "exhausted",
        "count": 7,
        "dead_letter_id": 42,
    }
    check_arguments(dead_letter_alert, [], notice)
    first, again = dead_letter_alert.fn(**notice), dead_letter_alert.fn(**notice)
    assert (first["outcome"], first["level"], again["outcome"]) == ("sent", "warning", "suppressed")
    (email,) = queued(redis_client, "email")
    assert (
        email.kwargs["subject"]
        == "[WARNING] 7 message(s) of charge_card dead-lettered on default (exhausted)"
    )
    # The next notice (a later dead letter) is an alert of its own
    assert dead_letter_alert.fn(**{**notice, "dead_letter_id": 43})["outcome"] == "sent"
