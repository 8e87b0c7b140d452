"""Actors of the idempotency and result-storage tests (loaded with CALLBOARD_ACTOR_MODULES).

Runs are recorded in Redis (:mod:`tests.support.records`), never counted in memory, so counts
hold across worker processes.
"""

from __future__ import annotations

import time
from typing import Any

from service import actor
from tests.support.actors import FAST, QUEUE
from tests.support.records import client, record


@actor(queue_name=QUEUE, idempotency_scope="global", max_retries=0)
def ti_once(tag: str, n: int = 0, hold: float = 0.0) -> None:
    """Record ``run``, then hold the claim ``hold`` seconds (so copies arrive while it runs)."""
    record(tag, "run", n=n)
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        time.sleep(0.01)


@actor(queue_name=QUEUE, idempotency_scope="global", idempotency_ttl=1.0, max_retries=2, **FAST)
def ti_fail_once(tag: str) -> None:
    """Fail the first attempt, succeed after; keys are kept for 1 s."""
    if client().incr(f"attempts:{tag}") == 1:
        record(tag, "failed")
        raise ValueError("first attempt fails")
    record(tag, "run")


@actor(queue_name=QUEUE, idempotency_scope="user", max_retries=0)
def ti_per_user(tag: str) -> None:
    """Record ``run``; keys are namespaced by the message's ``user_id`` option."""
    record(tag, "run")


@actor(queue_name=QUEUE, idempotency_scope="tenant", idempotency_store="database", max_retries=0)
def ti_per_tenant(tag: str) -> None:
    """Record ``run``; keys are namespaced by ``tenant_id`` and kept in the database."""
    record(tag, "run")


@actor(queue_name=QUEUE, store_results=True, result_ttl=60, max_retries=0)
def ti_result(email: str, fail: bool = False) -> dict[str, Any]:
    """Return (or fail with) data that names the sensitive ``email`` argument."""
    if fail:
        raise ValueError(f"cannot mail {email}")
    return {"email": email, "note": f"mailed {email}", "api_token": "tok-123456", "count": 1}
