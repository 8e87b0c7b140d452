"""Maintenance actors: retention of what Callboard keeps (``maintenance`` policy: no retries)."""

from __future__ import annotations

import logging
from typing import Any

from config.settings import get_settings
from service import actor, idempotency, schedule_history
from service.deadletters import store
from service.logs import log_event
from service.maintenance import files

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


# -- file cleanup: the filesystem work and its containment rules are in service.maintenance.files --


@actor(policy="maintenance", idempotent=True, throws=(files.CleanupRefusedError,))
def cleanup_old_files(root: str, max_age_days: float, pattern: str = "*") -> dict[str, Any]:
    """Delete regular files named like ``pattern`` under ``root`` older than ``max_age_days``.

    ``root`` must lie in ``CALLBOARD_CLEANUP_ROOTS``; symlinks are never followed nor deleted.
    Returns and logs (``maintenance.cleaned``) the counts: ``deleted``, ``bytes``, ``kept``,
    ``symlinks_skipped``, ``errors``. A refused root or pattern raises
    :class:`~service.maintenance.files.CleanupRefusedError` (not retried).
    """
    found = files.cleanup_old_files(root, max_age_days, pattern, get_settings()).asdict()
    log_event(logger, logging.INFO, "maintenance.cleaned", **found)
    return found


@actor(policy="maintenance", idempotent=True)
def cleanup_temp_files() -> dict[str, Any]:
    """Delete files in Callboard's temp area (``<CALLBOARD_DATA_DIR>/tmp``) older than
    ``CALLBOARD_CLEANUP_TEMP_MAX_AGE``; returns and logs (``maintenance.cleaned``) the counts."""
    found = files.cleanup_temp_files(get_settings()).asdict()
    log_event(logger, logging.INFO, "maintenance.cleaned", **found)
    return found
