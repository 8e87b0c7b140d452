"""``callboard schedule``: the periodic schedule. ``validate [--file PATH] [--json]`` checks the
file against the registered actors and the queue catalogue.

``validate`` exits 0 for a valid schedule (warnings, one ``warning: ...`` line each, go to
stderr) and 1 for an invalid or unreadable one, with each problem on its own line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from config.settings import get_settings
from scheduler.schedule import Schedule, ScheduleError, load_schedule
from service.runtime import get_broker, load_actors

EXIT_INVALID = 1


def register(commands: Any) -> None:
    """Add ``schedule`` and its subcommands to the parser."""
    parser = commands.add_parser("schedule", help="the periodic schedule: validate")
    sub = parser.add_subparsers(dest="schedule_command", metavar="COMMAND", required=True)
    validate = sub.add_parser("validate", help="check the schedule file; exit 1 listing every problem")
    validate.add_argument(
        "--file", type=Path, help="the schedule file (default: CALLBOARD_SCHEDULE_FILE or the shipped one)"
    )
    for command in (validate,):
        command.add_argument("--json", action="store_true", help="print JSON")
        command.set_defaults(handler=run_schedule)


def schedule_path(file: Path | None = None) -> Path:
    """``file`` if given, else ``CALLBOARD_SCHEDULE_FILE`` (the shipped schedule by default)."""
    return file if file is not None else get_settings().schedule_file


def current_schedule(file: Path | None = None) -> tuple[Path, Schedule]:
    """The schedule at :func:`schedule_path`, validated against every loaded actor module.

    Raises :class:`ScheduleError` (every problem) or ``ConfigurationError`` (an actor module).
    """
    path = schedule_path(file)
    load_actors()
    return path, load_schedule(path, get_broker())


def run_schedule(args: argparse.Namespace) -> int:
    """Dispatch a ``schedule`` subcommand."""
    return _COMMANDS[args.schedule_command](args)


def _validate(args: argparse.Namespace) -> int:
    path = schedule_path(args.file)
    try:
        _, schedule = current_schedule(path)
    except ScheduleError as error:
        if args.json:
            _json(
                {
                    "file": str(path),
                    "valid": False,
                    "entries": None,
                    "warnings": [],
                    "problems": error.problems,
                }
            )
        count = len(error.problems)
        print(
            f"callboard: invalid schedule {path} ({count} problem{'s' if count > 1 else ''}):",
            file=sys.stderr,
        )
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    for warning in schedule.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    count = len(schedule.entries)
    if args.json:
        _json(
            {
                "file": str(path),
                "valid": True,
                "entries": count,
                "warnings": list(schedule.warnings),
                "problems": [],
            }
        )
    else:
        print(f"schedule OK: {count} entr{'ies' if count != 1 else 'y'} ({path})")
    return 0


def _json(row: dict[str, Any]) -> None:
    json.dump([row], sys.stdout)
    sys.stdout.write("\n")


_COMMANDS = {"validate": _validate}
