"""``callboard scheduler``: the scheduler daemon (the CLI is the composition root that may
wire in the ``scheduler`` package)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric

from config.settings import get_settings
from service import runtime
from service.db.migrate import current_revision, head_revision
from service.errors import CallboardError
from service.health import probes
from service.health.http import HealthServer
from service.logs import configure_logging

#: Seconds a readiness probe's answer is reused (Kubernetes probes every few seconds).
PROBE_TTL = 5.0


def register(commands: Any) -> None:
    """Add ``scheduler`` to the parser."""
    parser = commands.add_parser("scheduler", help="run the scheduler daemon (leader sends, standbys wait)")
    parser.add_argument("--file", help="schedule file (default: CALLBOARD_SCHEDULE_FILE)")
    parser.set_defaults(handler=run_scheduler)


def check_database() -> None:
    """Refuse to start on a database that lacks the scheduler's tables: one clear line."""
    current, head = current_revision(), head_revision()
    if current != head:
        raise CallboardError(
            f"database at revision {current or 'none'}, need {head}: run `callboard db upgrade`"
        )


def readiness(checks: dict[str, Callable[[], str | None]], ttl: float = PROBE_TTL) -> Callable[[], list[str]]:
    """``/readyz``'s problems: each named check (``None`` = fine), its answer cached ``ttl`` s."""
    cached = {name: probes.Cached(check, ttl=ttl) for name, check in checks.items()}

    def problems() -> list[str]:
        return [f"{name}: {problem}" for name, probe in cached.items() if (problem := probe()) is not None]

    return problems


class _SchedulerMetrics:
    """The default registry without the worker pod's ``callboard_worker_*`` families: their
    unlabelled gauges would read 0 here, which looks like a dead worker pool to an alert."""

    def collect(self) -> Iterable[Metric]:
        return (family for family in REGISTRY.collect() if not family.name.startswith("callboard_worker_"))


def metrics_text() -> bytes:
    """The scheduler's exposition (in-process values: the scheduler is one process)."""
    return generate_latest(_SchedulerMetrics())


def run_scheduler(args: argparse.Namespace) -> int:
    """Validate the schedule, then run the daemon until SIGTERM; exit 1 on an invalid schedule.
    With ``CALLBOARD_METRICS_PORT`` set, serve ``/metrics``, ``/healthz`` (the main loop renews
    its lease) and ``/readyz`` (broker and database answer) meanwhile."""
    from scheduler.daemon import SchedulerDaemon

    settings = get_settings()
    configure_logging(settings)
    runtime.load_actors()
    check_database()
    broker = runtime.get_broker()
    daemon = SchedulerDaemon(settings, broker, path=args.file)
    server = None
    if settings.metrics_port:
        server = HealthServer(
            settings.metrics_host,
            settings.metrics_port,
            metrics=metrics_text,
            liveness=daemon.liveness_problems,
            readiness=readiness(
                {"broker": lambda: probes.broker_problem(broker), "database": probes.database_problem}
            ),
        ).start()
    try:
        return daemon.run()
    finally:
        if server is not None:
            server.stop()
