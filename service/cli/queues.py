"""``callboard queues [--json]``: depth, in flight, delayed, dead, oldest age and SLA per queue."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from config.queues import QUEUES
from service.cli.output import print_rows
from service.deadletters import store
from service.errors import BrokerUnavailableError
from service.runtime import get_broker, load_actors

COLUMNS = ("queue", "waiting", "in_flight", "delayed", "dead", "oldest_age_s", "sla_s", "over_sla")


def register(commands: Any) -> None:
    """Add ``queues`` to the parser."""
    parser = commands.add_parser("queues", help="depth, in flight, delayed, dead, oldest age, SLA per queue")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(handler=run_queues)


def queue_rows() -> list[dict[str, Any]]:
    """One row per catalogue queue and per other queue an actor declares."""
    load_actors()
    broker = get_broker()
    names = list(QUEUES) + sorted(set(broker.get_declared_queues()) - set(QUEUES))
    try:
        dead: dict[str, int] = {}
        for row in store.stats():
            dead[row["queue"]] = dead.get(row["queue"], 0) + row["count"]
        dead_known = True
    except SQLAlchemyError:  # the store is optional here: show the broker's view anyway
        dead_known = False
    stats_of = getattr(broker, "queue_stats", None)
    if stats_of is None:
        raise BrokerUnavailableError("this broker cannot report queue statistics")
    rows = []
    for name in names:
        try:
            stats = stats_of(name)
        except Exception as error:
            raise BrokerUnavailableError(f"broker unavailable: {error}") from None
        spec = QUEUES.get(name)
        sla = spec.sla_seconds if spec else None
        age = None if stats.oldest_age is None else round(stats.oldest_age, 3)
        rows.append(
            {
                "queue": name,
                "waiting": stats.waiting,
                "in_flight": stats.in_flight,
                "delayed": stats.delayed,
                "dead": dead.get(name, 0) if dead_known else None,
                "oldest_age_s": age,
                "sla_s": sla,
                "over_sla": None if age is None or sla is None else age > sla,
            }
        )
    return rows


def run_queues(args: argparse.Namespace) -> int:
    """Print the queue table."""
    print_rows(queue_rows(), COLUMNS, args.json)
    return 0
