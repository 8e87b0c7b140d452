"""One worker process: boot the broker and actors, run Dramatiq's Worker, stop cleanly.

Signals: the first SIGTERM stops gracefully (running messages get up to the shutdown timeout,
then are handed back); a second SIGTERM hands back everything at once and exits. SIGINT is
ignored: the supervisor turns Ctrl-C into SIGTERM, so one keypress is not seen twice.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from dramatiq import Worker

from config.settings import get_settings
from service import runtime
from service.logs import configure_logging, log_event
from service.middleware.handback import HandBack
from service.middleware.recycle import Recycle
from service.state import state_client
from service.worker.heartbeat import Heartbeat

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_KILLED = 1
EXIT_BOOT_FAILED = 3
#: The process stopped itself after ``max_messages``; the supervisor starts a fresh one.
EXIT_RECYCLE = 75


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What one worker process consumes and how it stops."""

    queues: tuple[str, ...] = ()
    threads: int = 8
    shutdown_timeout: float = 600.0
    idle_timeout: float = 1.0


Announce = Callable[[str, dict[str, Any]], None]


def run_worker_process(options: WorkerOptions, announce: Announce | None = None) -> int:
    """Run a worker until SIGTERM or recycling; returns the process exit code.

    ``announce("recycling", {})`` is called as soon as the process decides to recycle (after
    ``max_messages``, or when a thread stays stuck past its hard limit for
    ``CALLBOARD_STUCK_RECYCLE_AFTER``), before it drains its running messages, so a supervisor
    can start the replacement at once; what still runs after the shutdown timeout (the stuck
    message) is handed back;
    ``announce("beat", {"busy": n, "stuck": n})`` every heartbeat interval.
    """
    stop = threading.Event()
    recycled = threading.Event()
    broker = None

    def hurry(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            log_event(logger, logging.INFO, "worker.stopping", reason="signal")
            stop.set()
            return
        # Second signal: give everything back now and leave without waiting for actors.
        if broker is not None:
            for middleware in broker.middleware:
                if isinstance(middleware, HandBack):
                    middleware.hand_back(broker)
        log_event(logger, logging.WARNING, "worker.killed")
        logging.shutdown()
        os._exit(EXIT_KILLED)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, hurry)
    settings = get_settings()
    configure_logging(settings)
    try:
        broker = runtime.get_broker()
        broker.emit_after("process_boot")
        runtime.load_actors()
        for queue in options.queues:
            broker.declare_queue(queue)
    except Exception as error:
        log_event(logger, logging.CRITICAL, "worker.boot_failed", error=str(error))
        return EXIT_BOOT_FAILED

    def recycle() -> None:
        recycled.set()
        stop.set()
        if announce is not None:
            announce("recycling", {})

    for middleware in broker.middleware:
        if isinstance(middleware, Recycle):
            middleware.on_limit = recycle

    worker = Worker(
        broker,
        queues=set(options.queues) or None,
        worker_threads=options.threads,
        worker_timeout=int(options.idle_timeout * 1000),
    )
    worker.start()
    heartbeat = Heartbeat(
        broker,
        settings,
        queues=options.queues,
        threads=options.threads,
        client=state_client(broker, settings),
        announce=announce,
        on_stuck=recycle,  # a thread stuck for good: a fresh process replaces this one
    ).start()
    log_event(
        logger,
        logging.INFO,
        "worker.started",
        threads=options.threads,
        queues=sorted(options.queues) or "all",
    )
    stop.wait()
    if recycled.is_set():
        log_event(logger, logging.INFO, "worker.recycling")
    worker.stop(timeout=int(options.shutdown_timeout * 1000))
    heartbeat.stop()
    broker.close()
    log_event(logger, logging.INFO, "worker.stopped")
    return EXIT_RECYCLE if recycled.is_set() else EXIT_OK
