"""Diagnostic actors: prove a deployment end to end (``callboard send ping``)."""

from __future__ import annotations

import logging
import time

from service import actor
from service.logs import log_event

logger = logging.getLogger(__name__)


@actor(policy="critical")
def ping() -> None:
    """Log ``diagnostics.pong``: proves a worker consumes the ``critical`` queue."""
    log_event(logger, logging.INFO, "diagnostics.pong")


@actor(policy="default")
def sleep(seconds: float) -> None:
    """Sleep ``seconds`` (bounded by the default policy's limits): exercise long-running work."""
    time.sleep(seconds)
