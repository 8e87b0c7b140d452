"""``callboard actors [--json]``: every registered actor with its module, queue, policy and the
effective retry, time-limit, idempotency, breaker, result and status settings.

Two actors with one name never get this far: Dramatiq refuses the second declaration, and loading
fails with one line naming both (exit 2), here and in every other command, the worker included.
"""

from __future__ import annotations

import argparse
from typing import Any

from config.policies import DEFAULT_POLICY
from config.settings import get_settings
from service.actors import origin
from service.aio import is_async
from service.cli.output import print_rows
from service.runtime import get_broker, load_actors

COLUMNS = (
    "actor",
    "module",
    "queue",
    "policy",
    "max_retries",
    "soft_time_limit_s",
    "time_limit_s",
    "idempotency",
    "circuit_breaker",
    "store_results",
    "track_status",
    "async",
)

PLAIN = "default (plain dramatiq)"


def register(commands: Any) -> None:
    """Add ``actors`` to the parser."""
    parser = commands.add_parser(
        "actors", help="list registered actors with module, queue, policy, limits and options"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(handler=run_actors)


def _seconds(options: dict[str, Any], name: str, default: float) -> float:
    return float(options.get(name, default * 1000)) / 1000


def _breaker(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return f"per message ({getattr(value, '__name__', 'callable')})"


def actor_row(actor: Any) -> dict[str, Any]:
    """The effective settings of one actor, as the middleware resolves them (actor → policy →
    middleware default)."""
    options = actor.options
    hard = _seconds(options, "time_limit", DEFAULT_POLICY.time_limit)
    scope = options.get("idempotency_scope")
    return {
        "actor": actor.actor_name,
        "module": origin(actor.fn).split(":", 1)[0],
        "queue": actor.queue_name,
        "policy": options.get("policy", PLAIN),
        "max_retries": options.get("max_retries", DEFAULT_POLICY.max_retries),
        "min_backoff_s": _seconds(options, "min_backoff", DEFAULT_POLICY.min_backoff),
        "max_backoff_s": _seconds(options, "max_backoff", DEFAULT_POLICY.max_backoff),
        # What applies: a soft limit above the hard one never fires.
        "soft_time_limit_s": min(_seconds(options, "soft_time_limit", DEFAULT_POLICY.soft_time_limit), hard),
        "time_limit_s": hard,
        "throws": [exception.__name__ for exception in _tuple(options.get("throws"))],
        # Keys are on only with a scope; a message's own idempotency_key turns them on for any actor.
        "idempotency": scope or "off",
        "idempotency_ttl_s": _seconds(options, "idempotency_ttl", DEFAULT_POLICY.idempotency_ttl),
        "idempotency_store": options.get("idempotency_store", DEFAULT_POLICY.idempotency_store),
        "circuit_breaker": _breaker(options.get("circuit_breaker")),
        "store_results": bool(options.get("store_results", False)),
        "result_ttl_s": _seconds(options, "result_ttl", get_settings().result_ttl),
        "track_status": bool(options.get("track_status", True)),
        "max_age_s": _seconds(options, "max_age", 0) or None,
        "async": is_async(getattr(actor.fn, "__wrapped__", actor.fn)),
        "function": origin(actor.fn),
    }


def _tuple(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def actor_rows() -> list[dict[str, Any]]:
    """One row per registered actor, sorted by name."""
    load_actors()
    broker = get_broker()
    return [actor_row(broker.get_actor(name)) for name in sorted(broker.get_declared_actors())]


def run_actors(args: argparse.Namespace) -> int:
    """Print the actor table."""
    print_rows(actor_rows(), COLUMNS, args.json)
    return 0
