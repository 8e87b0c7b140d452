"""``callboard dlq``: list, show, requeue, purge and count dead letters (all with ``--json``)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import redis
from dramatiq.errors import BrokerConnectionError
from sqlalchemy.exc import SQLAlchemyError

from config.durations import parse_duration
from service.cli.output import print_rows
from service.deadletters import store
from service.deadletters.requeue import requeue
from service.errors import BadInputError, BrokerUnavailableError, CallboardError
from service.runtime import get_broker

LIST_COLUMNS = ("id", "queue", "actor", "reason", "attempts", "failed_at", "state", "exception")


def register(commands: Any) -> None:
    """Add ``dlq`` and its subcommands to the parser."""
    parser = commands.add_parser("dlq", help="dead letters: list, show, requeue, purge, stats")
    sub = parser.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)

    def filters(command: argparse.ArgumentParser) -> None:
        command.add_argument("--queue", help="only this queue")
        command.add_argument("--actor", help="only this actor")
        command.add_argument("--reason", help="only this reason (exhausted, non_retryable, ...)")
        command.add_argument("--since", help="failed within this duration (1h, 7d) or since an ISO time")

    listing = sub.add_parser("list", help="newest dead letters first")
    filters(listing)
    listing.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100)")
    listing.add_argument(
        "--state",
        default="dead",
        choices=("dead", "requeued", "any"),
        help="dead (default), requeued, or any",
    )
    show = sub.add_parser("show", help="one dead letter in full (arguments redacted)")
    show.add_argument("id", type=int)
    again = sub.add_parser("requeue", help="send dead letters again with a new retry budget")
    again.add_argument("ids", type=int, nargs="*", metavar="ID")
    again.add_argument("--all", action="store_true", help="every dead letter matching the filters")
    filters(again)
    purge = sub.add_parser("purge", help="delete dead letters")
    purge.add_argument("ids", type=int, nargs="*", metavar="ID")
    purge.add_argument("--older-than", help="failed longer ago than this duration (30d)")
    filters(purge)
    sub.add_parser("stats", help="dead letters counted by queue, actor and reason")
    for command in (listing, show, again, purge, sub.choices["stats"]):
        command.add_argument("--json", action="store_true", help="print JSON")
        command.set_defaults(handler=run_dlq)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInputError(f"--since {text!r} is neither a duration (1h, 7d) nor an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _selection(args: argparse.Namespace, **extra: Any) -> store.Selection:
    return store.Selection(
        queue=args.queue, actor=args.actor, reason=args.reason, since=_since(args.since), **extra
    )


def _emit(value: Any, as_json: bool, text: str) -> None:
    if as_json:
        json.dump(value, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


def run_dlq(args: argparse.Namespace) -> int:
    """Dispatch a ``dlq`` subcommand; database errors become one line, exit 1."""
    try:
        return _COMMANDS[args.dlq_command](args)
    except SQLAlchemyError as error:
        raise CallboardError(f"dead-letter store unavailable: {str(error).splitlines()[0]}") from None
    except (BrokerConnectionError, redis.RedisError, pika.exceptions.AMQPError, OSError) as error:
        raise BrokerUnavailableError(f"broker unavailable: {error}") from None


def _list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise BadInputError("--limit must be at least 1")
    state = None if args.state == "any" else args.state
    rows = store.list_dead(_selection(args, state=state), limit=args.limit)
    print_rows(rows, LIST_COLUMNS, args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    row = store.get(args.id)
    if row is None:
        print(f"callboard: no dead letter {args.id}", file=sys.stderr)
        return 1
    detail = store.detail(row)
    if args.json:
        _emit([detail], True, "")
    else:
        for key, value in detail.items():
            shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
            if key == "traceback" and value:
                print(f"{key}:\n{value}")
            else:
                print(f"{key}: {'-' if shown is None else shown}")
    return 0


def _requeue(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        raise BadInputError("give dead-letter IDs or --all (with optional filters), not both")
    result = requeue(_selection(args, ids=args.ids or None), get_broker(), keep_ids=bool(args.ids))
    failed = dict(result.skipped)
    for dead_id in args.ids:
        if dead_id not in result.sent and dead_id not in failed:
            failed[dead_id] = "not a dead letter waiting for requeue"
    if args.ids:
        rows = [{"id": i, "requeued": True, "message_id": m} for i, m in result.sent.items()]
        rows += [{"id": i, "requeued": False, "error": why} for i, why in sorted(failed.items())]
    else:
        rows = [{"requeued": result.count, "not_requeued": len(failed)}]
    if args.json:
        _emit(rows, True, "")
    else:
        for dead_id, message_id in result.sent.items():
            print(f"{dead_id}: requeued as {message_id}")
        for dead_id, why in sorted(failed.items()):
            print(f"{dead_id}: not requeued: {why}")
        print(f"{result.count} requeued, {len(failed)} not requeued")
    return 1 if failed else 0


def _purge(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.older_than):
        raise BadInputError("give dead-letter IDs or --older-than DURATION (with optional filters)")
    older_than = None
    if args.older_than:
        try:
            older_than = datetime.now(UTC) - timedelta(seconds=parse_duration(args.older_than))
        except ValueError as error:
            raise BadInputError(f"--older-than: {error}") from None
    deleted = store.purge(_selection(args, ids=args.ids or None, older_than=older_than, state=None))
    _emit([{"purged": deleted}], args.json, f"{deleted} purged")
    return 0


def _stats(args: argparse.Namespace) -> int:
    rows = store.stats()
    print_rows(rows, ("queue", "actor", "reason", "count"), args.json)
    return 0


_COMMANDS = {"list": _list, "show": _show, "requeue": _requeue, "purge": _purge, "stats": _stats}
