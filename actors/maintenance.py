"""Maintenance actors: retention of what Callboard keeps (``maintenance`` policy: no retries)."""

from __future__ import annotations

import logging

from config.settings import get_settings
from service import actor, idempotency, schedule_history
from service.deadletters import store
from service.logs import log_event

logger = logging.getLogger(__name__)


@actor(policy="maintenance", idempotent=True)
def prune_history() -> dict[str, int]:
    """Apply retention to every store Callboard keeps history in; returns the rows deleted per
    store and logs them (``maintenance.pruned``):

    ``dead_letters`` older than ``CALLBOARD_DLQ_RETENTION``, ``schedule_fires`` (the scheduler's
    fire history) older than ``CALLBOARD_SCHEDULE_HISTORY_RETENTION``, and expired
    ``idempotency_keys`` rows (Redis keys expire by themselves).
    """
    settings = get_settings()
    removed = {
        "dead_letters": store.prune(settings.dlq_retention),
        "schedule_fires": schedule_history.prune(settings.schedule_history_retention),
        "idempotency_keys": idempotency.prune(),
    }
    log_event(logger, logging.INFO, "maintenance.pruned", **removed)
    return removed
