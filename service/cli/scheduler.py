"""``callboard scheduler``: the scheduler daemon (the CLI is the composition root that may
wire in the ``scheduler`` package)."""

from __future__ import annotations

import argparse
from typing import Any

from config.settings import get_settings
from service import runtime
from service.db.migrate import current_revision, head_revision
from service.errors import CallboardError
from service.logs import configure_logging


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


def run_scheduler(args: argparse.Namespace) -> int:
    """Validate the schedule, then run the daemon until SIGTERM; exit 1 on an invalid schedule."""
    from scheduler.daemon import SchedulerDaemon

    settings = get_settings()
    configure_logging(settings)
    runtime.load_actors()
    check_database()
    daemon = SchedulerDaemon(settings, runtime.get_broker(), path=args.file)
    return daemon.run()
