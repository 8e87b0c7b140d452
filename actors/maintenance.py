"""Maintenance actors: retention of what Callboard keeps (``maintenance`` policy: no retries)."""

from __future__ import annotations

import logging

from config.settings import get_settings
from service import actor
from service.deadletters import store
from service.logs import log_event

logger = logging.getLogger(__name__)


@actor(policy="maintenance", idempotent=True)
def prune_history() -> None:
    """Delete dead letters older than ``CALLBOARD_DLQ_RETENTION`` and log how many."""
    removed = store.prune(get_settings().dlq_retention)
    log_event(logger, logging.INFO, "maintenance.pruned", dead_letters=removed)
