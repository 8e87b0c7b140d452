"""The dead-letter alert: one message to ``CALLBOARD_DLQ_ALERT_ACTOR`` per actor per interval.

A poison flood of thousands of messages of one actor sends one alert carrying the count, then
at most one more per ``CALLBOARD_DLQ_ALERT_INTERVAL`` with the dead letters counted meanwhile.
The rate limit lives in the database, so it holds across worker processes and restarts.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from dramatiq import Broker
from dramatiq.errors import ActorNotFound

from config.settings import Settings
from service.deadletters import store
from service.logs import log_event

logger = logging.getLogger(__name__)


def send_alerts(stored: list[store.Stored], broker: Broker, settings: Settings) -> int:
    """Send the alerts due for ``stored`` dead letters; returns how many were sent."""
    alert_actor_name = settings.dlq_alert_actor
    if not alert_actor_name or not stored:
        return 0
    try:
        alert_actor = broker.get_actor(alert_actor_name)
    except ActorNotFound:
        log_event(logger, logging.ERROR, "dlq.alert_actor_missing", alert_actor=alert_actor_name)
        return 0
    by_actor: dict[str, list[store.Stored]] = defaultdict(list)
    for dead in stored:
        if dead.actor != alert_actor_name:  # an alert about failing alerts would feed itself
            by_actor[dead.actor or "-"].append(dead)
    sent = 0
    for actor, deads in by_actor.items():
        count = store.alert_allowed(actor, settings.dlq_alert_interval, len(deads))
        if count:
            last = deads[-1]
            alert_actor.send_with_options(
                kwargs={
                    "actor": actor,
                    "queue": last.queue,
                    "reason": last.reason,
                    "count": count,
                    "dead_letter_id": last.id,
                },
            )
            sent += 1
    return sent
