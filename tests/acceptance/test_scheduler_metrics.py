"""The scheduler's /metrics, /healthz and /readyz, scraped over HTTP from a real
``callboard scheduler``: fire counters and gauges, the broker gauges (leader only), the heartbeat,
missed slots and readiness."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from config.queues import QUEUES
from config.settings import get_settings
from service.deadletters import store
from service.health import probes
from service.health.http import HealthServer
from tests.conftest import delete_test_queues
from tests.support.actors import QUEUE
from tests.support.ports import free_port
from tests.support.processes import CallboardProcess
from tests.support.producer import producing_on
from tests.support.waiting import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def schedule_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "schedule.toml"
    path.write_text('[defaults]\ntimezone = "UTC"\n\n' + body)
    return path


def every_second(name: str, catchup: str = "skip") -> str:
    # ping runs on "critical", so the test queue holds only what a test puts there.
    return (
        f'[entries.{name}]\nactor = "ping"\nevery = "1s"\n'
        f'catchup = "{catchup}"\ncatchup_window = "1m"\nexpires = "1h"\n\n'
    )


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``, keyed by sample name and label set."""
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: found for (sample, labels), found in samples.items() if sample == name}


@pytest.fixture
def scheduler_env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "CALLBOARD_SCHEDULER_LEASE": "3"}


@pytest.fixture
def scheduler_state(migrated_database_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``scheduler.state`` on the test's database, to set up what earlier schedulers left."""
    from scheduler import state

    monkeypatch.setenv("CALLBOARD_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    return state


def start(env: dict[str, str], tmp_path: Path, label: str) -> tuple[CallboardProcess, int]:
    port = free_port()
    process = CallboardProcess(
        "scheduler",
        env={**env, "CALLBOARD_METRICS_PORT": str(port), "CALLBOARD_METRICS_HOST": "127.0.0.1"},
        log_path=tmp_path / f"scheduler-{label}.log",
    )
    return process, port


def test_the_leader_serves_fire_metrics_broker_gauges_and_probes(
    scheduler_env: dict[str, str],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 5 messages waiting in a queue nobody consumes, and 2 dead letters of that queue
    with producing_on(redis_url, redis_url, tmp_path / "var", monkeypatch):
        from tests.support.actors import tb_record

        for n in range(5):
            tb_record.send("waiting", n)
    now = datetime.now(UTC)
    store.store_new(
        [
            {
                "dedupe_key": f"metrics-{n}",
                "message_id": f"m{n}",
                "queue": QUEUE,
                "actor": "tb_record",
                "reason": "failed",
                "attempts": 1,
                "first_failed_at": now,
                "last_failed_at": now,
                "stored_at": now,
            }
            for n in range(2)
        ],
        url=migrated_database_url,
    )
    path = schedule_file(tmp_path, every_second("beat"))
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(path)}
    started = time.time()
    # When the scheduler runs an every-second entry as the only replica
    process, port = start(env, tmp_path, "leader")
    try:
        process.wait_for_event("scheduler.leader", timeout=30)

        def sent() -> float:
            return value(scrape(port), "callboard_scheduler_fires_total", entry="beat", outcome="sent") or 0

        first = wait_until(sent, timeout=10, message="a sent fire counted")
        wait_until(lambda: sent() >= first + 2, timeout=10, message="the fire counter increasing")
        samples = wait_until(
            lambda: (
                (found := scrape(port))
                and value(found, "callboard_queue_depth", queue=QUEUE) is not None
                and found
            ),
            timeout=10,
            message="the broker gauges",
        )
        # Then the fire metrics are there
        assert (value(samples, "callboard_scheduler_lateness_seconds_count", entry="beat") or 0) >= 1
        last_fire = value(samples, "callboard_scheduler_last_fire_timestamp_seconds", entry="beat")
        assert last_fire is not None and started < last_fire <= time.time()
        assert value(samples, "callboard_scheduler_entry_interval_seconds", entry="beat") == 1.0
        assert value(samples, "callboard_scheduler_leader") == 1.0
        tick = value(samples, "callboard_scheduler_tick_timestamp_seconds")
        assert tick is not None and time.time() - tick < 5
        # And the broker gauges, for every catalogue queue with its SLA, and for the test queue
        for name, spec in QUEUES.items():
            assert value(samples, "callboard_queue_sla_seconds", queue=name) == spec.sla_seconds
            assert value(samples, "callboard_queue_depth", queue=name) is not None
        assert value(samples, "callboard_queue_depth", queue=QUEUE) == 5
        assert value(samples, "callboard_queue_in_flight", queue=QUEUE) == 0
        assert value(samples, "callboard_queue_delayed", queue=QUEUE) == 0
        assert (value(samples, "callboard_queue_oldest_age_seconds", queue=QUEUE) or 0) > 0
        assert value(samples, "callboard_queue_oldest_age_seconds", queue="reports") == 0
        assert value(samples, "callboard_dead_letters_current", queue=QUEUE) == 2
        assert value(samples, "callboard_dead_letters_current", queue="reports") == 0
        assert value(samples, "callboard_queue_sla_seconds", queue=QUEUE) is None  # not in the catalogue
        assert (value(samples, "callboard_broker_gauges_timestamp_seconds") or 0) >= started
        # But none of the worker pod's families
        assert not [name for name, _ in samples if name.startswith("callboard_worker_")]
        # And both probes pass
        status, body = http_get(port, "/healthz")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        assert http_get(port, "/readyz")[0] == 200
        # And the heartbeat says it leads
        [info] = redis_client.hvals("callboard:schedulers:info")
        data = json.loads(info)["data"]
        assert data["leader"] is True and isinstance(data["token"], int) and data["entries"] == 1
        # When the file turns invalid: a failed reload is counted
        path.write_text(path.read_text() + '[entries.bad]\nactor = "no_such_actor"\nevery = "1s"\n')
        wait_until(
            lambda: value(scrape(port), "callboard_scheduler_reloads_total", outcome="failed") == 1,
            timeout=10,
            message="a failed reload counted",
        )
    finally:
        process.stop()
    # A clean stop removes the heartbeat
    assert process.process.returncode == 0
    assert not redis_client.hvals("callboard:schedulers:info")


def test_only_the_leader_exports_the_broker_gauges(scheduler_env: dict[str, str], tmp_path: Path) -> None:
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, every_second("pair")))}
    leader, leader_port = start(env, tmp_path, "a")
    standby = None
    try:
        leader.wait_for_event("scheduler.leader", timeout=30)
        standby, standby_port = start(env, tmp_path, "b")
        standby.wait_for_event("scheduler.started", timeout=30)
        wait_until(
            lambda: named(scrape(leader_port), "callboard_queue_depth"), timeout=10, message="leader gauges"
        )
        # Given both replicas running: the standby exports its state but no broker gauges
        wait_until(lambda: http_get(standby_port, "/healthz")[0] == 200, timeout=10, message="standby up")
        samples = scrape(standby_port)
        assert value(samples, "callboard_scheduler_leader") == 0.0
        assert value(scrape(leader_port), "callboard_scheduler_leader") == 1.0
        for name in (
            "callboard_queue_depth",
            "callboard_queue_sla_seconds",
            "callboard_dead_letters_current",
        ):
            assert not named(samples, name), name
        assert value(samples, "callboard_broker_gauges_timestamp_seconds") == 0.0
        assert value(samples, "callboard_scheduler_entry_interval_seconds", entry="pair") == 1.0
        assert not named(samples, "callboard_scheduler_fires_total")
        # When the leader stops, the standby takes over and exports them
        leader.stop()
        standby.wait_for_event("scheduler.leader", timeout=10)
        samples = wait_until(
            lambda: (found := scrape(standby_port)) and named(found, "callboard_queue_depth") and found,
            timeout=10,
            message="the new leader's gauges",
        )
        assert value(samples, "callboard_scheduler_leader") == 1.0
    finally:
        leader.stop()
        if standby is not None:
            standby.stop()


def test_on_rabbitmq_the_gauges_show_what_the_broker_can_tell(
    scheduler_env: dict[str, str],
    tmp_path: Path,
    redis_url: str,
    amqp_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 3 messages waiting in the test queue on RabbitMQ
    with producing_on(amqp_server_url, redis_url, tmp_path / "var", monkeypatch):
        from tests.support.actors import tb_record

        for n in range(3):
            tb_record.send("waiting", n)
    body = '[entries.hourly]\nactor = "tb_record"\nevery = "1h"\nargs = ["hourly"]\n'
    env = {
        **scheduler_env,
        "CALLBOARD_BROKER_URL": amqp_server_url,
        "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, body)),
    }
    # When a scheduler on RabbitMQ leads
    process, port = start(env, tmp_path, "rabbitmq")
    try:
        process.wait_for_event("scheduler.leader", timeout=30)
        samples = wait_until(
            lambda: (found := scrape(port)) and value(found, "callboard_queue_depth", queue=QUEUE) and found,
            timeout=10,
            message="the broker gauges",
        )
    finally:
        process.stop()
        delete_test_queues(amqp_server_url)
    # Then depth and delayed are exported; in flight and the age of waiting messages are not
    assert value(samples, "callboard_queue_depth", queue=QUEUE) == 3
    assert value(samples, "callboard_queue_delayed", queue=QUEUE) == 0
    assert not named(samples, "callboard_queue_in_flight")
    assert value(samples, "callboard_queue_oldest_age_seconds", queue=QUEUE) is None
    assert value(samples, "callboard_queue_sla_seconds", queue="critical") == QUEUES["critical"].sla_seconds


def test_missed_slots_are_counted_by_policy(
    scheduler_env: dict[str, str], tmp_path: Path, scheduler_state: ModuleType
) -> None:
    # Given an entry whose last slot was handled 10 s ago (the scheduler was down since)
    state = scheduler_state
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    state.advance("late", last, "sent")
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, every_second("late")))}
    # When the scheduler starts with catchup = "skip"
    process, port = start(env, tmp_path, "missed")
    try:
        process.wait_for_event("scheduler.leader", timeout=30)
        missed = wait_until(
            lambda: value(scrape(port), "callboard_scheduler_fires_total", entry="late", outcome="missed"),
            timeout=10,
            message="missed slots counted",
        )
        [logged] = process.events("schedule.missed")
    finally:
        process.stop()
    # Then each missed slot is counted once, as the log says (the slots of the last 2 s are on time)
    assert missed == logged["count"]
    assert 7 <= missed <= 10


def test_last_fire_is_restored_from_the_history_at_start(
    scheduler_env: dict[str, str], tmp_path: Path, scheduler_state: ModuleType
) -> None:
    # Given a yearly entry (nothing due now) last sent 20 minutes ago by an earlier scheduler
    state = scheduler_state
    sent_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    assert state.record_fire("yearly", sent_at, "sent", token=1, message_id="m-1", sent_at=sent_at)
    body = '[entries.yearly]\nactor = "ping"\ncron = "0 0 1 1 *"\ncatchup = "skip"\n'
    env = {**scheduler_env, "CALLBOARD_SCHEDULE_FILE": str(schedule_file(tmp_path, body))}
    # When a new scheduler starts (nothing is due for it to send)
    process, port = start(env, tmp_path, "restored")
    try:
        process.wait_for_event("scheduler.started", timeout=30)
        restored = wait_until(
            lambda: value(scrape(port), "callboard_scheduler_last_fire_timestamp_seconds", entry="yearly"),
            timeout=10,
            message="the last fire restored",
        )
    finally:
        process.stop()
    # Then the gauge says when it was last sent, so "not fired for 2x its interval" survives restarts
    assert restored == sent_at.timestamp()


def test_readiness_fails_while_a_check_fails(tmp_path: Path) -> None:
    from service.cli.scheduler import readiness

    closed = free_port()
    database = f"postgresql+psycopg2://postgres@127.0.0.1:{closed}/test"
    healthy = HealthServer(
        "127.0.0.1", 0, metrics=lambda: b"", liveness=list, readiness=readiness({"broker": lambda: None})
    ).start()
    failing = HealthServer(
        "127.0.0.1",
        0,
        metrics=lambda: b"",
        liveness=list,
        readiness=readiness(
            {"broker": lambda: None, "database": lambda: probes.database_problem(database, timeout=3)}
        ),
    ).start()
    try:
        assert http_get(healthy.port, "/readyz")[0] == 200
        status, body = http_get(failing.port, "/readyz")
        assert status == 503
        [problem] = json.loads(body)["problems"]
        assert problem.startswith("database: ")
    finally:
        healthy.stop()
        failing.stop()
