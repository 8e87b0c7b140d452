"""``callboard schedule``: the periodic schedule.

``validate [--file PATH]`` checks the file against the registered actors and the queue catalogue;
``list`` shows each entry's next fires, last fire and pause; ``run NAME`` fires an entry now;
``pause NAME`` / ``resume NAME`` are stored for every replica; ``history NAME`` lists its fires.
All take ``--json``.

``validate`` exits 0 for a valid schedule (warnings, one ``warning: ...`` line each, go to
stderr) and 1 for an invalid or unreadable one, with each problem on its own line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.settings import get_settings
from scheduler import state
from scheduler.daemon import send_entry
from scheduler.schedule import Entry, Schedule, ScheduleError, load_schedule
from scheduler.trigger import fire_times, parse_timezone
from service.cli.output import print_rows
from service.cli.scheduler import check_database
from service.errors import BadInputError, BrokerUnavailableError
from service.runtime import get_broker, load_actors

EXIT_INVALID = 1


def register(commands: Any) -> None:
    """Add ``schedule`` and its subcommands to the parser."""
    parser = commands.add_parser("schedule", help="the periodic schedule: validate, list, run, pause, ...")
    sub = parser.add_subparsers(dest="schedule_command", metavar="COMMAND", required=True)
    validate = sub.add_parser("validate", help="check the schedule file; exit 1 listing every problem")
    listing = sub.add_parser("list", help="entries with their next fire times, last fire, pause")
    for command in (validate, listing):
        command.add_argument(
            "--file",
            type=Path,
            help="the schedule file (default: CALLBOARD_SCHEDULE_FILE or the shipped one)",
        )
    named = []
    for name, text in (
        ("run", "fire an entry now, once"),
        ("pause", "stop firing an entry (all replicas)"),
        ("resume", "fire a paused entry again"),
        ("history", "an entry's last fires"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("name", help="entry name")
        named.append(command)
    named[-1].add_argument("--limit", type=int, default=20, help="at most this many fires (default 20)")
    for command in (validate, listing, *named):
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


LIST_COLUMNS = ("name", "actor", "schedule", "next", "last_fire", "last_outcome", "paused")


def _entry(name: str) -> Entry:
    check_database()
    _, schedule = current_schedule()
    entry = schedule.entries.get(name)
    if entry is None:
        raise BadInputError(f"no schedule entry {name!r} (known: {', '.join(sorted(schedule.entries))})")
    return entry


def _list(args: argparse.Namespace) -> int:
    check_database()
    _, schedule = current_schedule(args.file)
    known = state.entry_states(list(schedule.entries))
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name, entry in sorted(schedule.entries.items()):
        zone = parse_timezone(entry.timezone)
        saved = known.get(name)
        rows.append(
            {
                "name": name,
                "actor": entry.actor,
                "schedule": entry.trigger.describe(),
                "next": [moment.astimezone(zone).isoformat() for moment in fire_times(entry.trigger, now, 3)]
                if entry.enabled
                else [],
                "last_fire": saved.last_slot.isoformat() if saved and saved.last_slot else None,
                "last_outcome": saved.last_outcome if saved else None,
                "paused": bool(saved and saved.paused),
                "enabled": entry.enabled,
            }
        )
    if args.json:
        json.dump(rows, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_rows([{**row, "next": row["next"][:1]} for row in rows], LIST_COLUMNS, False)
    return 0


def _run(args: argparse.Namespace) -> int:
    entry = _entry(args.name)
    # Not second-aligned, so a manual run never takes a real slot of the timetable.
    slot = datetime.now(UTC)
    if not state.record_fire(entry.name, slot, "manual", token=0):
        raise BadInputError(f"{entry.name} was already fired at {slot.isoformat()}; try again in a second")
    message_id = send_entry(entry, slot, get_settings(), broker=get_broker(), manual=True)
    state.set_fire_result(entry.name, slot, "manual" if message_id else "send_failed", message_id)
    if message_id is None:
        raise BrokerUnavailableError(f"{entry.name}: the broker did not take the message")
    _emit({"name": entry.name, "message_id": message_id, "slot": slot.isoformat()}, args.json, message_id)
    return 0


def _pause(args: argparse.Namespace) -> int:
    entry = _entry(args.name)
    paused = args.schedule_command == "pause"
    state.set_paused(entry.name, paused)
    _emit(
        {"name": entry.name, "paused": paused}, args.json, f"{entry.name} {'paused' if paused else 'resumed'}"
    )
    return 0


def _history(args: argparse.Namespace) -> int:
    entry = _entry(args.name)
    rows = state.history(entry.name, limit=args.limit)
    print_rows(rows, ("slot", "sent_at", "lateness_s", "outcome", "message_id"), args.json)
    return 0


def _emit(row: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        _json(row)
    else:
        print(text)


_COMMANDS = {
    "validate": _validate,
    "list": _list,
    "run": _run,
    "pause": _pause,
    "resume": _pause,
    "history": _history,
}
