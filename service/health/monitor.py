"""The periodic health check's judgement on top of :func:`service.health.checks.run_checks`:
dead-letter growth since the previous check, a compact report, and the alert to raise.

Growth is measured against the dead-letter total the previous check saw, kept in the shared-state
Redis under :data:`LAST_TOTAL_KEY` (read and replaced in one transaction, so two checks running
at once each count a dead letter once). The first check, or one after the key was lost, has
nothing to compare with and reports ``healthy``.

Report statuses: ``healthy`` → ``ok``, ``degraded`` and ``unknown`` → ``degraded``,
``unhealthy`` → ``critical``. Only a ``critical`` report raises an alert, keyed by the set of
unhealthy components, so the same failure seen by many checks gives one alert per dedupe window
and a new failing component gives a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from service.health.checks import (
    DEAD_LETTER_BURST,
    DEGRADED,
    HEALTHY,
    UNHEALTHY,
    UNKNOWN,
    Check,
    overall,
)

#: The dead-letter total seen by the previous periodic health check.
LAST_TOTAL_KEY = "callboard:health:dead_letters_total"

#: Report status of each overall status.
REPORT_STATUS = {HEALTHY: "ok", DEGRADED: "degraded", UNHEALTHY: "critical"}
#: Report status of each component status.
COMPONENT_STATUS = {HEALTHY: "ok", DEGRADED: "degraded", UNKNOWN: "unknown", UNHEALTHY: "critical"}


def swap_last_total(client: redis.Redis, total: int) -> int | None:
    """Store ``total`` as the last dead-letter total; returns the previous one (``None``: none)."""
    pipe = client.pipeline(transaction=True)
    pipe.get(LAST_TOTAL_KEY)
    pipe.set(LAST_TOTAL_KEY, total)
    previous, _ = pipe.execute()
    try:
        return None if previous is None else int(previous)
    except ValueError:
        return None


def check_growth(previous: int | None, total: int, burst: int = DEAD_LETTER_BURST) -> Check:
    """Dead letters added since the previous check: ``degraded`` when any, ``unhealthy`` when more
    than ``burst``. A smaller total (requeued or purged) is no growth."""
    if previous is None:
        return Check("dead_letter_growth", HEALTHY, f"first check: {total} waiting", {"total_dead": total})
    grew = max(total - previous, 0)
    data = {"grew": grew, "previous": previous, "total_dead": total}
    detail = f"{grew} new since the last check; {total} waiting for an operator"
    if grew > burst:
        return Check("dead_letter_growth", UNHEALTHY, f"more than {burst}: {detail}", data)
    return Check("dead_letter_growth", DEGRADED if grew else HEALTHY, detail, data)


def growth_check(client: redis.Redis | None, checks: Sequence[Check]) -> Check:
    """:func:`check_growth` for the total read by ``checks``' ``dead_letters`` check; ``unknown``
    when that total or the shared-state Redis is not available. Never raises."""
    dead = next((check for check in checks if check.component == "dead_letters"), None)
    total = None if dead is None else dead.data.get("total_dead")
    if not isinstance(total, int):
        return Check("dead_letter_growth", UNKNOWN, "not checked: dead-letter total unavailable")
    if client is None:
        return Check("dead_letter_growth", UNKNOWN, "not checked: no shared-state Redis")
    try:
        previous = swap_last_total(client, total)
    except (redis.RedisError, OSError) as error:
        return Check("dead_letter_growth", UNKNOWN, f"shared-state Redis unavailable: {type(error).__name__}")
    return check_growth(previous, total)


def report(checks: Sequence[Check]) -> dict[str, Any]:
    """``{"status": "ok" | "degraded" | "critical", "checks": {component: status},
    "problems": {component: detail}}`` (problems: every component that is not ok)."""
    return {
        "status": REPORT_STATUS[overall(checks)],
        "checks": {check.component: COMPONENT_STATUS[check.status] for check in checks},
        "problems": {check.component: check.detail for check in checks if check.status != HEALTHY},
    }


def alert_request(checks: Sequence[Check]) -> dict[str, Any] | None:
    """The ``send_alert`` keyword arguments for ``checks``, or ``None`` unless one is unhealthy.

    The dedupe key names the unhealthy components only (sorted), not their details, which change
    from check to check (ages, counts).
    """
    failing = sorted(check.component for check in checks if check.status == UNHEALTHY)
    if not failing:
        return None
    return {
        "level": "critical",
        "title": f"Callboard critical: {', '.join(failing)}",
        "details": {check.component: check.detail for check in checks if check.status == UNHEALTHY},
        "dedupe_key": "health:" + ",".join(failing),
    }
