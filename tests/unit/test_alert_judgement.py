"""The pure parts of alerts and the periodic health check: levels, dedupe keys, channel messages,
dead-letter growth, the report, and the alert a critical report raises."""

from __future__ import annotations

import pytest

from config.settings import load_settings
from service.alerts import channels, dedupe
from service.health import monitor
from service.health.checks import Check


def test_levels_are_checked_and_normalised() -> None:
    assert channels.check_level(" Critical ") == "critical"
    for bad in ("fatal", "", None, 3):
        with pytest.raises(channels.AlertLevelError, match="level must be one of info, warning, critical"):
            channels.check_level(bad)


def test_dedupe_keys_are_stable_and_bounded() -> None:
    assert dedupe.dedupe_key("critical", "  Disk   FULL ") == "critical:disk full"
    assert dedupe.dedupe_key("critical", "Disk full", " Disk:/VAR ") == "disk:/var"
    assert dedupe.dedupe_key("warning", "x", "  ") == "warning:x"
    assert len(dedupe.key_id("k" * 10_000)) == 32
    assert dedupe.claim(None, "k", 60) == "unavailable"
    assert dedupe.claim(None, "k", 0) == "off"


def test_no_channel_configured_means_no_channel_message() -> None:
    assert channels.channel_messages("info", "t", None, "info:t", load_settings()) == []


def test_long_details_are_cut_for_the_channels() -> None:
    text = channels.details_text({"log": "y" * 10_000})
    assert len(text) == channels.MAX_DETAILS_CHARS and text.endswith("…")
    assert channels.details_text({"a": 1, "b": "two"}) == "a: 1\nb: two"


@pytest.mark.parametrize(
    ("previous", "total", "status", "detail"),
    [
        (None, 5, "healthy", "first check: 5 waiting"),
        (5, 5, "healthy", "0 new since the last check; 5 waiting for an operator"),
        (5, 8, "degraded", "3 new since the last check; 8 waiting for an operator"),
        (8, 2, "healthy", "0 new since the last check; 2 waiting for an operator"),  # purged
        (0, 101, "unhealthy", "more than 100: 101 new since the last check; 101 waiting for an operator"),
    ],
)
def test_dead_letter_growth(previous: int | None, total: int, status: str, detail: str) -> None:
    check = monitor.check_growth(previous, total)
    assert (check.status, check.detail) == (status, detail)


def test_growth_is_unknown_without_a_total() -> None:
    unknown = Check("dead_letters", "unknown", "not checked: database unreachable")
    assert monitor.growth_check(None, [unknown]).status == "unknown"


def test_a_critical_report_names_its_failing_checks_and_keys_the_alert_by_them_only() -> None:
    first = [
        Check("broker", "healthy", "ok"),
        Check("workers", "unhealthy", "no live worker: last heartbeat 40s ago"),
        Check("queue:email", "degraded", "oldest waiting 6.0s > SLA 5s"),
        Check("queue:reports", "unhealthy", "oldest waiting 130.0s > 2x SLA 120s"),
    ]
    later = [
        Check("broker", "healthy", "ok"),
        Check("workers", "unhealthy", "no live worker: last heartbeat 95s ago"),
        Check("queue:email", "healthy", "0 waiting"),
        Check("queue:reports", "unhealthy", "oldest waiting 190.0s > 2x SLA 120s"),
    ]
    report = monitor.report(first)
    assert report["status"] == "critical"
    assert report["checks"] == {
        "broker": "ok",
        "workers": "critical",
        "queue:email": "degraded",
        "queue:reports": "critical",
    }
    assert set(report["problems"]) == {"workers", "queue:email", "queue:reports"}
    request, again = monitor.alert_request(first), monitor.alert_request(later)
    assert request is not None and again is not None
    assert request["dedupe_key"] == again["dedupe_key"] == "health:queue:reports,workers"
    assert request["title"] == again["title"] == "Callboard critical: queue:reports, workers"
    assert monitor.alert_request([Check("queue:email", "degraded", "x")]) is None
    assert monitor.report([Check("c", "unknown", "x")])["status"] == "degraded"
