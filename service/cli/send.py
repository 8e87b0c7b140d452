"""``callboard send ACTOR [--args JSON] [--kwargs JSON] [--queue Q] [--delay SECONDS]
[--request-id ID] [--idempotency-key KEY]``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from service.errors import BadInputError
from service.sending import send


def register(commands: Any) -> None:
    """Add ``send`` to the parser."""
    parser = commands.add_parser("send", help="enqueue one message; prints its message id")
    parser.add_argument("actor", help="actor name")
    parser.add_argument("--args", default="[]", help="positional arguments as a JSON array")
    parser.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    parser.add_argument("--queue", help="send to this queue instead of the actor's")
    parser.add_argument("--delay", type=float, help="seconds before the message may run")
    parser.add_argument("--request-id", help="request id to carry in the message (default: new)")
    parser.add_argument(
        "--idempotency-key",
        help="run at most once per key (and the actor's scope and TTL); repeats are acked, not run",
    )
    parser.set_defaults(handler=run_send)


def _json(text: str, name: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"--{name} is not valid JSON: {error}") from None
    if not isinstance(value, kind):
        raise BadInputError(f"--{name} must be a JSON {'array' if kind is list else 'object'}")
    return value


def run_send(args: argparse.Namespace) -> int:
    """Validate and send one message; print its id."""
    positional = _json(args.args, "args", list)
    keywords = _json(args.kwargs, "kwargs", dict)
    if args.delay is not None and args.delay < 0:
        raise BadInputError("--delay must not be negative")
    message_id = send(
        args.actor,
        positional,
        keywords,
        queue=args.queue,
        delay=args.delay,
        request_id=args.request_id,
        idempotency_key=args.idempotency_key,
    )
    print(message_id)
    return 0
