"""Keep N worker processes alive: restart recycled ones at once and crashed ones with backoff,
forward SIGTERM/SIGINT as SIGTERM, and return when every child has stopped.

Unlike the stock ``dramatiq`` command, one child exiting does not stop the others: a child that
announces it is recycling is replaced at once (while it still drains its running messages), a
crashed one after a growing delay (1 s up to 30 s). A child that
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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from service.logs import log_event
from service.worker.process import EXIT_BOOT_FAILED, EXIT_RECYCLE, WorkerOptions, run_worker_process

logger = logging.getLogger(__name__)

MAX_RESTART_DELAY = 30.0


def _child_main(options: WorkerOptions, channel: Connection) -> None:
    def announce(what: str) -> None:
        with contextlib.suppress(OSError):
            channel.send(what)

    code = run_worker_process(options, announce)
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


class Supervisor:
    """Run ``processes`` children of :func:`run_worker_process` until stopped."""

    def __init__(self, options: WorkerOptions, processes: int) -> None:
        self.options = options
        self.processes = processes
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
        for slot in range(self.processes):
            self._start(slot)
        log_event(logger, logging.INFO, "supervisor.started", processes=self.processes, pid=os.getpid())
        while self.children or (self._restart_at and not self.stopping):
            waitables: list[Any] = [c.process.sentinel for c in self.children]
            ready = wait(waitables + [c.channel for c in self.children], timeout=0.5)
            self._read_announcements(ready)
            self._reap()
            self._restart_due()
        log_event(logger, logging.INFO, "supervisor.stopped", exit_code=self.exit_code)
        return self.exit_code

    def _start(self, slot: int) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main, args=(self.options, writer), name=f"worker-{slot}"
        )
        process.start()
        writer.close()
        self.children.append(_Child(slot, process, reader))

    def _read_announcements(self, ready: list[Any]) -> None:
        for child in self.children:
            if child.channel not in ready or child.retiring:
                continue
            try:
                announcement = child.channel.recv()
            except (EOFError, OSError):
                continue
            if announcement == "recycling" and not self.stopping:
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
