"""Monitoring actors: ``periodic_health_check`` (scheduled in ``config/schedule.toml``)."""

from __future__ import annotations

import logging
from typing import Any

from config.settings import get_settings
from service import actor, send
from service.health import monitor
from service.health.checks import run_checks
from service.logs import log_event
from service.metrics.definitions import HEALTH_CHECKS
from service.runtime import get_broker
from service.state import state_client_or_none

logger = logging.getLogger(__name__)

_LOG_LEVEL = {"ok": logging.INFO, "degraded": logging.WARNING, "critical": logging.ERROR}


@actor(policy="critical", idempotent=True)  # a repeat run finds its alert deduplicated
def periodic_health_check() -> dict[str, Any]:
    """Check broker, database, workers, scheduler, every queue against its SLA, dead letters and
    their growth since the previous check; log ``health.checked`` and return
    ``{"status": "ok" | "degraded" | "critical", "checks": {...}, "problems": {...}}``.

    When critical, sends one ``send_alert`` keyed by the unhealthy components (so repeated checks
    of one failure give one alert per dedupe window); ``alert`` in the result is its message id.
    """
    settings, broker = get_settings(), get_broker()
    checks = run_checks(settings, broker)
    checks.append(monitor.growth_check(state_client_or_none(broker, settings), checks))
    result = monitor.report(checks)
    HEALTH_CHECKS.labels(result["status"]).inc()
    log_event(logger, _LOG_LEVEL[result["status"]], "health.checked", **result)
    alert = monitor.alert_request(checks)
    if alert is not None:
        result["alert"] = send("send_alert", kwargs=alert)
    return result
