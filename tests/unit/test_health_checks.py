"""The judgement of ``service.health.checks``: each component's rules, the overall status, and a
run that never raises and stays bounded in time."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from config.settings import load_settings
from service.brokers.stats import QueueStats
from service.health import checks
from service.health.checks import Check
from service.health.heartbeats import Beat

NOW = 1_000_000.0
TIMEOUT = 30.0
LEASE = 15.0


def beat(age: float, started_age: float = 600.0, **data: Any) -> Beat:
    return Beat(
        id=f"h:{age}", data=data, host="h", pid=int(age * 10), started=NOW - started_age, seen=NOW - age
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "healthy"),
        (["healthy", "healthy"], "healthy"),
        (["healthy", "unknown"], "degraded"),
        (["degraded", "healthy"], "degraded"),
        (["unknown", "unhealthy", "degraded"], "unhealthy"),
    ],
)
def test_overall_is_the_worst_status_and_unknown_counts_as_degraded(
    statuses: list[checks.Status], expected: str
) -> None:
    assert checks.overall([Check(f"c{i}", s, "x") for i, s in enumerate(statuses)]) == expected


def test_probe_answers_become_broker_and_database_checks() -> None:
    assert checks.check_broker(None, "redis", 0.0123).row() == {
        "component": "broker",
        "status": "healthy",
        "detail": "redis reachable (12.3 ms)",
        "kind": "redis",
        "latency_ms": 12.3,
    }
    down = checks.check_database("OperationalError: refused\nIs the server running?", "postgresql", 3.0)
    assert down.status == "unhealthy"
    assert down.detail == "postgresql unreachable: OperationalError: refused"


def test_workers_need_one_live_heartbeat() -> None:
    # Given no beat at all, then only a stale one
    assert checks.check_workers([], TIMEOUT, NOW).status == "unhealthy"
    stale = checks.check_workers([beat(45, threads=8)], TIMEOUT, NOW)
    assert stale.status == "unhealthy" and "last heartbeat 45s ago" in stale.detail

    # When one process beats within the timeout
    found = [beat(2, threads=8, busy=3, queues=[]), beat(45, threads=8)]
    check = checks.check_workers(found, TIMEOUT, NOW)

    # Then workers are healthy, counted from live beats only
    assert check.status == "healthy", check.detail
    assert check.data["processes"] == 1 and check.data["threads"] == 8 and check.data["busy"] == 3
    assert check.data["queues"] == "all"


def test_a_stuck_thread_degrades_workers() -> None:
    check = checks.check_workers([beat(1, threads=4, stuck=1, queues=["email"])], TIMEOUT, NOW)
    assert check.status == "degraded" and "1 thread stuck" in check.detail
    assert check.data["queues"] == ["email"]


def test_scheduler_rules() -> None:
    def status(found: list[Beat]) -> str:
        return checks.check_scheduler(found, TIMEOUT, LEASE, NOW).status

    assert status([]) == "degraded"  # never seen: a deployment without a scheduler
    assert status([beat(120, leader=True)]) == "unhealthy"  # seen, none live: crashed or stuck
    assert status([beat(2, leader=True, token=3), beat(3, leader=False)]) == "healthy"
    assert status([beat(20, leader=True, token=3)]) == "degraded"  # leader's tick older than the lease
    # No live leader: how long since one was seen decides
    assert status([beat(2, leader=False), beat(50, leader=True)]) == "unhealthy"
    assert status([beat(2, leader=False), beat(31, leader=True)]) == "unhealthy"
    assert status([beat(2, leader=False)]) == "degraded"  # a clean hand-over leaves no leader beat


def test_a_crashed_leaders_last_beat_yields_to_the_new_leader() -> None:
    # Given the old leader's last beat (still live) and the standby that took over with a newer token
    found = [beat(25, leader=True, token=4, entries=9), beat(1, leader=True, token=5, entries=9)]
    check = checks.check_scheduler(found, TIMEOUT, LEASE, NOW)
    assert check.status == "healthy" and check.data["token"] == 5
    assert check.data["replicas"] == 2 and check.data["last_tick_age_s"] == 1.0


@pytest.mark.parametrize(
    ("age", "waiting", "consumers", "expected"),
    [
        (None, 0, 0, "healthy"),  # empty: nobody needs to consume it
        (1.0, 3, 1, "healthy"),
        (31.0, 3, 1, "degraded"),  # over the 30 s SLA
        (61.0, 3, 1, "unhealthy"),  # over twice the SLA
        (1.0, 3, 0, "degraded"),  # waiting, and no live worker consumes it
        (61.0, 3, 0, "unhealthy"),
        (1.0, 3, None, "healthy"),  # workers unknown: not judged
    ],
)
def test_queue_rules(age: float | None, waiting: int, consumers: int | None, expected: str) -> None:
    stats = QueueStats("default", waiting, 0, 0, age)
    check = checks.check_queue(stats, 30.0, consumers)
    assert check.status == expected, check.detail
    assert check.component == "queue:default" and check.data["sla_s"] == 30.0


def test_a_queue_without_an_sla_or_an_age_is_judged_on_consumers_only() -> None:
    assert checks.check_queue(QueueStats("x", 5, None, 0, None), None, 2).status == "healthy"


def test_consumers_of_counts_workers_that_consume_everything() -> None:
    alive = [beat(1, queues=[]), beat(2, queues=["email"]), beat(3, queues=["reports"])]
    assert checks.consumers_of("email", alive) == 2
    assert checks.consumers_of("default", alive) == 1


def test_dead_letter_growth_rules() -> None:
    def rows(n: int) -> list[dict[str, Any]]:
        return [{"queue": "email" if i % 2 else "default"} for i in range(n)]

    assert checks.check_dead_letters([], 12, 900, 100).status == "healthy"
    some = checks.check_dead_letters(rows(3), 12, 900, 100)
    assert some.status == "degraded"
    assert some.detail == "3 new dead letters in 15m (default 2, email 1); 12 waiting for an operator"
    assert checks.check_dead_letters(rows(101), 500, 900, 100).status == "unhealthy"


def test_run_checks_reports_what_it_cannot_read_and_never_raises(tmp_path: Path) -> None:
    # Given a stub broker (no queue statistics, no shared-state Redis) and an unmigrated SQLite
    settings = load_settings(data_dir=tmp_path)

    # When every component is checked
    found = {check.component: check for check in checks.run_checks(settings, StubBroker())}

    # Then what cannot be read is unknown, with a one-line reason
    assert found["broker"].status == "healthy" and found["database"].status == "healthy"
    assert found["workers"].status == "unknown" and "CALLBOARD_REDIS_URL" in found["workers"].detail
    assert found["queues"].status == "unknown" and "cannot report" in found["queues"].detail
    assert found["dead_letters"].status == "unknown"
    assert "no such table" in found["dead_letters"].detail
    assert all("\n" not in check.detail for check in found.values())
    assert checks.overall(list(found.values())) == "degraded"


def test_a_read_that_hangs_is_abandoned_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a dead-letter read that would hang far past the read budget
    released = threading.Event()
    monkeypatch.setattr(checks, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(checks, "_read_dead_letters", lambda url, now: released.wait(60))
    settings = load_settings(data_dir=tmp_path)

    # When every component is checked
    started = time.monotonic()
    found = {check.component: check for check in checks.run_checks(settings, StubBroker())}
    elapsed = time.monotonic() - started
    released.set()

    # Then the run ends at the deadline and says so
    assert elapsed < 3.0
    assert found["dead_letters"].status == "unknown" and "timed out" in found["dead_letters"].detail
