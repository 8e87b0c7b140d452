"""Keep N worker processes alive: restart recycled ones at once and crashed ones with backoff,
forward SIGTERM/SIGINT as SIGTERM, and return when every child has stopped.

Unlike the stock ``dramatiq`` command, one child exiting does not stop the others: a child that
announces it is recycling is replaced at once (while it still drains its running messages), a
crashed one after a growing delay (1 s up to 30 s). A child that
fails to boot (bad actor module, broker unreachable at start) stops the whole worker, since
restarting it would fail the same way.

The supervisor also serves the pod's one metrics port (``CALLBOARD_METRICS_PORT``): ``/metrics``
sums every child's values (prometheus_client multiprocess mode; a dead child's counters are
folded into an archive, its gauges dropped), ``/healthz`` fails when a child stops beating or
reports a thread stuck past its hard limit, ``/readyz`` when the broker or the database does not
answer.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from config.settings import Settings, get_settings
from service.brokers.embedded import EmbeddedRedis
from service.health import probes
from service.health.http import HealthServer
from service.logs import log_event
from service.metrics import definitions as m
from service.metrics import multiprocess
from service.worker.process import EXIT_BOOT_FAILED, EXIT_RECYCLE, WorkerOptions, run_worker_process

logger = logging.getLogger(__name__)

MAX_RESTART_DELAY = 30.0

#: Seconds a new child has to send its first beat (imports and broker connection take a while).
BOOT_GRACE = 60.0


def _child_main(options: WorkerOptions, channel: Connection) -> None:
    def announce(kind: str, data: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            channel.send((kind, data))

    code = run_worker_process(options, announce)
    from service.sentry import flush_sentry  # os._exit below skips Sentry's own flush at exit

    flush_sentry()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass(eq=False)
class _Child:
    slot: int
    process: BaseProcess
    channel: Connection
    retiring: bool = False  # announced recycling: its slot already has a replacement
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)  # wall clock, for the heartbeat gauge
    last_beat: float | None = None
    beat_at: float | None = None  # wall clock of last_beat
    stuck: int = 0


class Supervisor:
    """Run ``processes`` children of :func:`run_worker_process` until stopped."""

    def __init__(self, options: WorkerOptions, processes: int, settings: Settings | None = None) -> None:
        self.options = options
        self.processes = processes
        self.settings = settings or get_settings()
        self.metrics_dir: Path | None = None
        self.children: list[_Child] = []
        self.stopping = False
        self.exit_code = 0
        self._context = multiprocessing.get_context("fork")
        self._delays: dict[int, float] = {}
        self._restart_at: dict[int, float] = {}

    def run(self) -> int:
        """Start the children and supervise them; returns 0, or 1 if a child failed to boot."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # Before the first fork: children inherit the directory and write their values there.
        temporary = self.settings.metrics_dir is None
        server = None
        if self.settings.metrics_port:
            self.metrics_dir = multiprocess.prepare_directory(self.settings.metrics_dir)
            multiprocess.enable(self.metrics_dir, m.WORKER_POD_GAUGES)
            server = self._serve()
        for slot in range(self.processes):
            self._start(slot)
        log_event(logger, logging.INFO, "supervisor.started", processes=self.processes, pid=os.getpid())
        try:
            while self.children or (self._restart_at and not self.stopping):
                waitables: list[Any] = [c.process.sentinel for c in self.children]
                ready = wait(waitables + [c.channel for c in self.children], timeout=0.5)
                self._read_announcements(ready)
                self._reap()
                self._restart_due()
                self._set_gauges()
        finally:
            if server is not None:
                server.stop()
            if temporary and self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log_event(logger, logging.INFO, "supervisor.stopped", exit_code=self.exit_code)
        return self.exit_code

    def _set_gauges(self) -> None:
        m.WORKER_PROCESSES.set(len(self.children))
        working = [child for child in self.children if not child.retiring]
        if working:
            # A child that has not beaten yet counts from its start, so a slow boot shows up too.
            m.WORKER_HEARTBEAT.set(min(child.beat_at or child.started_at for child in working))
        m.WORKER_THREADS_STUCK.set(sum(child.stuck for child in self.children))

    def _serve(self) -> HealthServer:
        settings = self.settings
        broker_url = settings.broker_url or EmbeddedRedis(settings.data_dir).url
        broker = probes.Cached(lambda: probes.broker_url_problem(broker_url))
        database = probes.Cached(probes.database_problem)

        def readiness() -> list[str]:
            problems = [
                f"broker: {broker()}" if broker() else "",
                f"database: {database()}" if database() else "",
            ]
            return [problem for problem in problems if problem]

        directory = self.metrics_dir
        assert directory is not None
        return HealthServer(
            settings.metrics_host,
            settings.metrics_port,
            metrics=lambda: multiprocess.collect(directory),
            liveness=self.liveness_problems,
            readiness=readiness,
        ).start()

    def liveness_problems(self) -> list[str]:
        """Why this pod should be restarted: a child that stopped beating or has stuck threads."""
        now = time.monotonic()
        silent_after = max(3 * self.settings.heartbeat_interval, 15.0)
        problems = []
        for child in list(self.children):
            if child.retiring:
                continue  # draining before exit: its replacement reports for the slot
            pid = child.process.pid
            if child.last_beat is None:
                if now - child.started > max(BOOT_GRACE, silent_after):
                    problems.append(f"worker process {pid} has not sent a heartbeat since it started")
            elif now - child.last_beat > silent_after:
                problems.append(f"worker process {pid} silent for {now - child.last_beat:.0f}s")
            if child.stuck:
                problems.append(
                    f"worker process {pid}: {child.stuck} thread(s) stuck past their hard time limit"
                )
        if not self.children and not self.stopping:
            problems.append("no worker process running")
        return problems

    def _start(self, slot: int) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main, args=(self.options, writer), name=f"worker-{slot}"
        )
        process.start()
        writer.close()
        self.children.append(_Child(slot, process, reader))

    def _read_announcements(self, ready: list[Any]) -> None:
        for child in list(self.children):
            if child.channel not in ready:
                continue
            try:
                kind, data = child.channel.recv()
            except (EOFError, OSError, ValueError, TypeError):
                continue
            if kind == "beat":
                child.last_beat, child.beat_at = time.monotonic(), time.time()
                child.stuck = int(data.get("stuck", 0))
            elif kind == "recycling" and not self.stopping and not child.retiring:
                # Start the replacement now: the old process still drains its running messages.
                child.retiring = True
                log_event(logger, logging.INFO, "worker.recycled", pid=child.process.pid)
                self._start(child.slot)

    def _reap(self) -> None:
        for child in list(self.children):
            code = child.process.exitcode
            if code is None:
                continue
            self.children.remove(child)
            child.channel.close()
            if child.process.pid is not None and self.metrics_dir is not None:
                multiprocess.retire(child.process.pid, self.metrics_dir)
            if self.stopping or child.retiring:
                continue
            pid, slot = child.process.pid, child.slot
            if code == EXIT_RECYCLE:
                log_event(logger, logging.INFO, "worker.recycled", pid=pid)
                self._start(slot)
            elif code == EXIT_BOOT_FAILED:
                log_event(logger, logging.CRITICAL, "worker.boot_failed", pid=pid)
                self.exit_code = 1
                self._stop_all()
            else:
                # Back off on repeated crashes; a child that ran a while starts the count afresh.
                lived = time.monotonic() - child.started
                delay = (
                    1.0
                    if lived > MAX_RESTART_DELAY
                    else min(self._delays.get(slot, 0.5) * 2, MAX_RESTART_DELAY)
                )
                self._delays[slot] = delay
                self._restart_at[slot] = time.monotonic() + delay
                log_event(
                    logger, logging.ERROR, "worker.crashed", pid=pid, exit_code=code, restart_in_s=delay
                )

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self._restart_at.items()):
            if self.stopping:
                self._restart_at.clear()
                return
            if now >= when:
                del self._restart_at[slot]
                self._start(slot)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log_event(logger, logging.INFO, "supervisor.stopping", signal=signal.Signals(signum).name)
        self._stop_all()

    def _stop_all(self) -> None:
        self.stopping = True
        for child in self.children:
            pid = child.process.pid
            if pid is not None and child.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
