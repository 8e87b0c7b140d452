"""``callboard health [--json]``: each component's status; exit 0 healthy, 1 degraded, 2 unhealthy.

For this command exit 2 means *unhealthy*, not bad usage (bad settings or an actor module that
does not load still exit 2, with one line on stderr and nothing on stdout). The judgement lives in
:mod:`service.health.checks`; this module only prints it.
"""

from __future__ import annotations

import argparse
from typing import Any

from config.settings import get_settings
from service.cli.output import print_rows
from service.health.checks import overall, run_checks
from service.runtime import get_broker, load_actors

COLUMNS = ("component", "status", "detail")

#: The exit code of each overall status.
EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def register(commands: Any) -> None:
    """Add ``health`` to the parser."""
    parser = commands.add_parser(
        "health",
        help="broker, database, workers, scheduler, queue SLAs, dead letters; exit 0/1/2",
        description="Check every component once. Exit 0 healthy, 1 degraded, 2 unhealthy.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array, one object per component")
    parser.set_defaults(handler=run_health)


def run_health(args: argparse.Namespace) -> int:
    """Print one row per component, then (without ``--json``) the overall status."""
    load_actors()  # their queues are checked too
    checks = run_checks(get_settings(), get_broker())
    status = overall(checks)
    print_rows([check.row() for check in checks], COLUMNS, args.json)
    if not args.json:
        print(f"overall: {status}")
    return EXIT_CODES[status]
