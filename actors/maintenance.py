"""Maintenance actors: retention of what Callboard keeps (``maintenance`` policy: no retries)."""

from __future__ import annotations

import logging
from typing import Any

from config.settings import get_settings
from service import actor
from service.deadletters import store
from service.logs import log_event
from service.maintenance import files

logger = logging.getLogger(__name__)


@actor(policy="maintenance", idempotent=True)
def prune_history() -> None:
    """Delete dead letters older than ``CALLBOARD_DLQ_RETENTION`` and log how many."""
    removed = store.prune(get_settings().dlq_retention)
    log_event(logger, logging.INFO, "maintenance.pruned", dead_letters=removed)


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
