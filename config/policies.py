"""Task policies: the retry, backoff, time-limit and idempotency defaults an actor declares by name.

Every actor takes one policy (``default`` unless it says otherwise) and may override any field.
Durations are in seconds here; the middleware converts to Dramatiq's milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

RetryWhen = Callable[[int, BaseException], bool]
#: Names a circuit breaker from a message's ``(args, kwargs)`` (one breaker per destination).
BreakerName = Callable[[Sequence[Any], dict[str, Any]], str | None]


@dataclass(frozen=True, slots=True)
class Policy:
    """The defaults an actor runs under.

    ``max_retries`` counts retries after the first attempt; backoff is exponential with full
    jitter between ``min_backoff`` and ``max_backoff``; ``throws`` are exceptions that are never
    retried; ``retry_when(retries_so_far, exception)`` replaces the ``max_retries`` test when set;
    ``circuit_breaker`` names the breaker guarding the actor (or names it per message).

    ``idempotency_scope`` turns idempotency keys on (``global``, or namespaced by the message's
    ``user_id`` / ``tenant_id`` option); a key is kept ``idempotency_ttl`` seconds in
    ``idempotency_store`` (``redis``, falling back to the database while Redis is unreachable, or
    ``database`` for keys that must outlive Redis). ``result_ttl`` is how long a result of an actor
    declared with ``store_results=True`` is kept (``None``: ``CALLBOARD_RESULT_TTL``).
    ``track_status`` keeps each message's state in Redis for ``callboard status`` (on by default).
    """

    name: str
    queue: str
    max_retries: int
    min_backoff: float
    max_backoff: float
    soft_time_limit: float
    time_limit: float
    throws: tuple[type[BaseException], ...] = ()
    retry_when: RetryWhen | None = None
    idempotency_scope: Literal["global", "user", "tenant"] | None = None
    idempotency_ttl: float = 86400.0
    idempotency_store: Literal["redis", "database"] = "redis"
    result_ttl: float | None = None
    circuit_breaker: str | BreakerName | None = None
    keep_expired: bool = False
    track_status: bool = True
    extra: dict[str, object] = field(default_factory=dict)

    def override(self, **fields: object) -> Policy:
        """A copy of this policy with ``fields`` replaced; unknown field names raise ``TypeError``."""
        return replace(self, **fields)  # type: ignore[arg-type]


MINUTE = 60.0

POLICIES: dict[str, Policy] = {
    policy.name: policy
    for policy in (
        Policy("default", "default", 3, 1, 5 * MINUTE, 9 * MINUTE, 10 * MINUTE),
        Policy("critical", "critical", 3, 1, 30, 50, 60),
        Policy("email", "email", 5, 60, 10 * MINUTE, 100, 2 * MINUTE),
        Policy("report", "reports", 2, 5 * MINUTE, 30 * MINUTE, 28 * MINUTE, 30 * MINUTE),
        Policy("external_api", "external_api", 3, 10, 10 * MINUTE, 9 * MINUTE, 10 * MINUTE),
        Policy("maintenance", "maintenance", 0, 0, 0, 9 * MINUTE, 10 * MINUTE),
    )
}

DEFAULT_POLICY = POLICIES["default"]


def get_policy(name: str) -> Policy:
    """The policy called ``name``; raises ``KeyError`` naming the known policies when absent."""
    try:
        return POLICIES[name]
    except KeyError:
        raise KeyError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None
