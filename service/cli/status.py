"""``callboard status MESSAGE_ID [--json]``: a message's state, attempts, progress and result.

Exit 0 when the message (or group) is known; 1 when nothing is known of it (never sent, or its
status expired ``CALLBOARD_STATUS_TTL`` after its last change) or the state Redis is unreachable;
2 for an id that cannot be one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from service.status import status

#: Fields printed first, in this order; any others follow.
ORDER = (
    "message_id",
    "state",
    "actor",
    "queue",
    "attempts",
    "updated_at",
    "eta",
    "reason",
    "error",
    "progress",
    "group",
    "result",
)


def register(commands: Any) -> None:
    """Add ``status`` to the parser."""
    parser = commands.add_parser("status", help="state, attempts, progress and result of one message")
    parser.add_argument("message_id", help="a message id (as send prints it) or a group id")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    """Print the status of one message; 1 when it is unknown or expired."""
    found = status(args.message_id)
    if found is None:
        print(
            f"callboard: no status for {args.message_id} (unknown, or expired after CALLBOARD_STATUS_TTL)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(found, default=str))
        return 0
    for name in (*ORDER, *sorted(set(found) - set(ORDER))):
        if name in found:
            print(f"{name + ':':<12}{_show(found[name])}")
    return 0


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
