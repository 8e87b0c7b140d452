"""``callboard``: argument parsing, error-to-exit-code mapping, and dispatch.

Exit codes: 0 success, 1 failure or unhealthy, 2 bad usage or bad input. Errors print one line
on stderr, never a traceback (``CALLBOARD_LOG_LEVEL=DEBUG`` adds it for internal errors).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from config.settings import SettingsError
from service.errors import BadInputError, CallboardError, ConfigurationError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def exit_code_for(error: BaseException) -> int:
    """The exit code of ``error``: 2 for bad settings or input, 1 for everything else."""
    if isinstance(error, SettingsError | ConfigurationError | BadInputError):
        return EXIT_USAGE
    return EXIT_FAILURE


def build_parser() -> argparse.ArgumentParser:
    """The whole command-line grammar; each command module adds its subcommands."""
    from service.cli import actors, db, dlq, health, queues, schedule, scheduler, send, status, worker

    parser = argparse.ArgumentParser(prog="callboard", description="Callboard: Dramatiq job service.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (worker, scheduler, send, status, actors, queues, dlq, schedule, health, db):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``callboard`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        code = handler(args)
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except (SettingsError, CallboardError) as error:
        print(f"callboard: {error}", file=sys.stderr)
        return exit_code_for(error)
    except Exception as error:
        print(f"callboard: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        if os.environ.get("CALLBOARD_LOG_LEVEL", "").upper() == "DEBUG":
            traceback.print_exc()
        return EXIT_FAILURE
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
