"""Keep N worker processes alive: restart recycled ones at once and crashed ones with backoff,
forward SIGTERM/SIGINT as SIGTERM, and return when every child has stopped.

Unlike the stock ``dramatiq`` command, one child exiting does not stop the others: a recycled
child is replaced immediately, a crashed one after a growing delay (1 s up to 30 s). A child that
fails to boot (bad actor module, broker unreachable at start) stops the whole worker, since
restarting it would fail the same way.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from service.logs import log_event
from service.worker.process import EXIT_BOOT_FAILED, EXIT_RECYCLE, WorkerOptions, run_worker_process

logger = logging.getLogger(__name__)

MAX_RESTART_DELAY = 30.0


def _child_main(options: WorkerOptions) -> None:
    code = run_worker_process(options)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Supervisor:
    """Run ``processes`` children of :func:`run_worker_process` until stopped."""

    def __init__(self, options: WorkerOptions, processes: int) -> None:
        self.options = options
        self.processes = processes
        self.children: dict[int, BaseProcess] = {}
        self.stopping = False
        self.exit_code = 0
        self._context = multiprocessing.get_context("fork")
        self._delays: dict[int, float] = {}
        self._restart_at: dict[int, float] = {}

    def run(self) -> int:
        """Start the children and supervise them; returns 0, or 1 if a child failed to boot."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for slot in range(self.processes):
            self._start(slot)
        log_event(logger, logging.INFO, "supervisor.started", processes=self.processes, pid=os.getpid())
        while self.children or (self._restart_at and not self.stopping):
            sentinels = [child.sentinel for child in self.children.values()]
            wait(sentinels, timeout=0.5)
            self._reap()
            self._restart_due()
        log_event(logger, logging.INFO, "supervisor.stopped", exit_code=self.exit_code)
        return self.exit_code

    def _start(self, slot: int) -> None:
        child = self._context.Process(target=_child_main, args=(self.options,), name=f"worker-{slot}")
        child.start()
        self.children[slot] = child

    def _reap(self) -> None:
        for slot, child in list(self.children.items()):
            if child.exitcode is None:
                continue
            del self.children[slot]
            code = child.exitcode
            if self.stopping:
                continue
            if code == EXIT_RECYCLE:
                log_event(logger, logging.INFO, "worker.recycled", pid=child.pid)
                self._start(slot)
            elif code == EXIT_BOOT_FAILED:
                log_event(logger, logging.CRITICAL, "worker.boot_failed", pid=child.pid)
                self.exit_code = 1
                self._stop_all()
            else:
                delay = self._delays.get(slot, 0.5) * 2
                self._delays[slot] = min(delay, MAX_RESTART_DELAY)
                self._restart_at[slot] = time.monotonic() + self._delays[slot]
                log_event(
                    logger,
                    logging.ERROR,
                    "worker.crashed",
                    pid=child.pid,
                    exit_code=code,
                    restart_in_s=self._delays[slot],
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
        for child in self.children.values():
            if child.pid is not None and child.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
