"""A real Prometheus (the Debian package) scrapes a running worker pod and scheduler through a mixed
load; every PromQL expression of the shipped dashboards and rules is then evaluated on it.

Dashboards must show data for every query. Rules must load and evaluate cleanly in Prometheus,
every metric selector they use must match series, the alerts that the load provokes (failures,
dead letters, a queue nobody consumes, a failed reload) must fire, and the ones that mean
breakage (no leader, stale gauges, stuck threads, an entry not firing) must stay silent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Broker

from config.settings import get_settings
from service import send
from tests.conftest import unavailable
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.ports import free_port
from tests.support.processes import CallboardProcess
from tests.support.promql import RULES_FILE, dashboard_expressions, metric_names, rules, selectors
from tests.support.waiting import wait_until

#: Alerts the load below provokes (their expressions must return series).
PROVOKED = {
    "CallboardHighFailureRatio",
    "CallboardDeadLettersGrowing",
    "CallboardNoWorkerForQueue",
    "CallboardQueueOldestMessageTooOld",
    "CallboardScheduleReloadFailed",
}
#: Alerts that mean breakage this healthy pod does not have (their expressions must be empty).
SILENT = {
    "CallboardSchedulerNoLeader",
    "CallboardBrokerGaugesStale",
    "CallboardWorkerThreadsStuck",
    "CallboardScheduleEntryNotFiring",
    "CallboardQueueWaitAboveSLA",
}


class Prometheus:
    """A Prometheus server of the test's own on 127.0.0.1, scraping every second."""

    def __init__(self, binary: str, directory: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        config = directory / "prometheus.yml"
        scrapes = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
            for job, port in targets.items()
        )
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES_FILE}\n"
            f"scrape_configs:\n{scrapes}"
        )
        self.log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a Prometheus HTTP API answer; raises on an error status."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now."""
        data = self.api("query", query=expr, time=str(time.time()))
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data["result"]]
        return result

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        unavailable("prometheus not installed (apt-get install prometheus)")
    assert binary is not None
    return binary


@pytest.fixture
def scheduler(
    worker_env: dict[str, str], migrated_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[CallboardProcess, int, Path]]:
    """A scheduler with an entry every 3 s whose last slot was 10 s ago (so it has missed some)."""
    from scheduler import state

    monkeypatch.setenv("CALLBOARD_DATABASE_URL", migrated_database_url)
    get_settings.cache_clear()
    state.advance("beat", datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10), "sent")
    path = tmp_path / "schedule.toml"
    path.write_text(
        '[entries.beat]\nactor = "ping"\nevery = "3s"\n'
        'catchup = "skip"\ncatchup_window = "1m"\nexpires = "1h"\n'
    )
    port = free_port()
    env = {
        **worker_env,
        "CALLBOARD_SCHEDULE_FILE": str(path),
        "CALLBOARD_SCHEDULER_LEASE": "3",
        "CALLBOARD_METRICS_PORT": str(port),
    }
    process = CallboardProcess("scheduler", env=env, log_path=tmp_path / "scheduler.log")
    try:
        yield process, port, path
    finally:
        process.stop()


def test_prometheus_evaluates_every_dashboard_and_rule_expression(
    prometheus_binary: str,
    scheduler: tuple[CallboardProcess, int, Path],
    start_worker: StartWorker,
    redis_producer: Broker,
    tmp_path: Path,
) -> None:
    # Given a pod of 2 worker processes that leaves the "email" queue unconsumed, a scheduler,
    # and a Prometheus scraping both every second with the shipped rules
    daemon, scheduler_port, schedule = scheduler
    worker_port = free_port()
    start_worker(
        "--queues",
        f"{QUEUE},critical,default",
        CALLBOARD_WORKER_PROCESSES="2",
        CALLBOARD_METRICS_PORT=str(worker_port),
    )
    daemon.wait_for_event("scheduler.leader", timeout=30)
    prometheus = Prometheus(
        prometheus_binary, tmp_path, {"callboard-workers": worker_port, "callboard-scheduler": scheduler_port}
    )
    try:
        wait_until(prometheus.ready, timeout=30, message="Prometheus ready")
        wait_until(
            lambda: len([s for s in prometheus.query("up == 1")]) == 2, timeout=30, message="both targets up"
        )
        # When a mixed load runs: successes, retries, dead letters, expired messages, time
        # limits, messages nobody consumes, and a schedule file that fails to reload
        for _ in range(20):
            send("ping")
        for n in range(20):
            send("tb_record", ["ok"], {"n": n})
        for n in range(3):
            send("tb_fail", [f"fail-{n}"], max_retries=2, min_backoff=100, max_backoff=200)
        send("tb_throws", ["throws-1"])
        send("tb_stubborn", ["stubborn"])
        for n in range(4):
            send("tb_record", ["expired"], {"n": n}, delay=0.3, max_age=100)
        send("ping", queue="email")
        text = schedule.read_text()
        schedule.write_text(text + '[entries.broken]\nactor = "no_such_actor"\nevery = "1s"\n')
        daemon.wait_for_event("schedule.reload_failed", timeout=30)
        schedule.write_text(text)
        wait_until(
            lambda: prometheus.query("sum(callboard_dead_letters_total) >= 5"),
            timeout=60,
            message="the first dead letters scraped",
        )
        # A second wave on series Prometheus already holds (increase() cannot see the first
        # samples of a new series, so rates of the first wave start from what it ran already)
        send("tb_throws", ["throws-2"])
        for n in range(10):
            send("tb_record", ["ok-2"], {"n": n})
        for n in range(3):
            send("tb_fail", [f"fail-2-{n}"], max_retries=2, min_backoff=100, max_backoff=200)
        # Then, once the unconsumed message is older than twice its queue's SLA (5 s)
        wait_until(
            lambda: prometheus.query('max(callboard_queue_oldest_age_seconds{queue="email"}) > 10'),
            timeout=60,
            message="the email queue's message older than 2 x SLA",
        )
        wait_until(
            lambda: prometheus.query("sum(callboard_dead_letters_total) >= 9"), timeout=30, message="wave 2"
        )
        # every dashboard query shows data
        empty = [title for title, expr in dashboard_expressions() if not prometheus.query(expr)]
        assert not empty, f"dashboard queries without data: {empty}"
        # every rule is loaded and evaluated by Prometheus itself without error
        loaded = {
            rule["name"]: rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]
        }
        shipped = rules()
        assert set(loaded) == {rule.name for rule in shipped}
        wait_until(
            lambda: all(r.get("health") == "ok" for r in _reloaded_rules(prometheus)),
            timeout=10,
            message="every rule evaluated ok",
        )
        # every metric selector of every rule matches series
        for rule in shipped:
            used = [
                *metric_names(rule.expr),
                *(
                    metric + "{" + ",".join(f'{k}{op}"{v}"' for k, (op, v) in matchers.items()) + "}"
                    for metric, matchers in selectors(rule.expr)
                ),
            ]
            unmatched = [selector for selector in used if not prometheus.query(selector)]
            assert not unmatched, f"{rule.name}: {unmatched} match nothing"
        # the provoked alerts fire and the breakage alerts stay silent
        firing = {rule.name for rule in shipped if prometheus.query(rule.expr)}
        assert firing >= PROVOKED, f"provoked but not firing: {PROVOKED - firing}"
        assert not (SILENT & firing), f"firing on a healthy pod: {SILENT & firing}"
    finally:
        prometheus.stop()


def _reloaded_rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
