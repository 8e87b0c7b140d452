"""``callboard actors [--json]``: every registered actor with its queue, policy and limits."""

from __future__ import annotations

import argparse
from typing import Any

from config.policies import DEFAULT_POLICY
from service.cli.output import print_rows
from service.runtime import get_broker, load_actors

COLUMNS = ("actor", "queue", "policy", "max_retries", "soft_time_limit_s", "time_limit_s")


def register(commands: Any) -> None:
    """Add ``actors`` to the parser."""
    parser = commands.add_parser("actors", help="list registered actors with queue, policy, limits")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(handler=run_actors)


def actor_rows() -> list[dict[str, Any]]:
    """One row per registered actor, sorted by name."""
    load_actors()
    broker = get_broker()
    rows = []
    for name in sorted(broker.get_declared_actors()):
        actor = broker.get_actor(name)
        options = actor.options
        hard = options.get("time_limit", DEFAULT_POLICY.time_limit * 1000) / 1000
        soft = options.get("soft_time_limit", DEFAULT_POLICY.soft_time_limit * 1000) / 1000
        rows.append(
            {
                "actor": name,
                "queue": actor.queue_name,
                "policy": options.get("policy", "default (plain dramatiq)"),
                "max_retries": options.get("max_retries", DEFAULT_POLICY.max_retries),
                "soft_time_limit_s": min(
                    soft, hard
                ),  # what applies: a soft limit above the hard one never fires
                "time_limit_s": hard,
            }
        )
    return rows


def run_actors(args: argparse.Namespace) -> int:
    """Print the actor table."""
    print_rows(actor_rows(), COLUMNS, args.json)
    return 0
