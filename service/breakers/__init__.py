"""Circuit breakers shared by every worker process through Redis.

A breaker is named: ``smtp`` for email, ``webhook:<host>`` per webhook host, or any name an actor
declares (``@actor(circuit_breaker="billing-api")``; a callable of the message's ``(args,
kwargs)`` names one per destination). :class:`service.middleware.breakers.Breakers` asks the
breaker before an actor runs and reports how the run ended; the state lives in
:mod:`service.breakers.store`, and :func:`announce` reports each state change once: a log line,
a metric and an alert, by the process that made it.
"""

from __future__ import annotations

import logging

from dramatiq import Broker

from config.settings import Settings
from service.breakers.store import BreakerStore, Decision, Transition
from service.logs import log_event
from service.metrics.definitions import BREAKER_TRANSITIONS
from service.middleware.retries import error_summary
from service.state import state_client

__all__ = ["BreakerStore", "Decision", "Transition", "announce", "family", "store_for"]

logger = logging.getLogger(__name__)

#: The actor that gets one alert per transition (written elsewhere; absent on some deployments).
ALERT_ACTOR = "send_alert"

_EVENTS = {"opened": "breaker.opened", "half_open": "breaker.half_open", "closed": "breaker.closed"}
_STATES = {"opened": "open", "half_open": "half_open", "closed": "closed"}


def family(name: str) -> str:
    """The bounded metric label of breaker ``name``: the part before ``:`` (``webhook``)."""
    return name.split(":", 1)[0]


def store_for(broker: Broker, settings: Settings) -> BreakerStore | None:
    """The breakers of the shared-state Redis, or ``None`` when there is none (RabbitMQ without
    ``CALLBOARD_REDIS_URL``: breakers are then off)."""
    client = state_client(broker, settings)
    if client is None:
        return None
    return BreakerStore(
        client, threshold=settings.breaker_failure_threshold, recovery=settings.breaker_recovery_timeout
    )


def announce(broker: Broker, settings: Settings, name: str, transition: Transition) -> None:
    """Report that this process moved breaker ``name`` (log, metric, one alert).

    The alert goes to the ``send_alert`` actor when the broker has one (``critical`` when the
    breaker opens, ``info`` otherwise, ``dedupe_key`` ``breaker:<name>:<state>``); the log line
    says whether it was ``sent``, had ``no_actor`` or ``failed`` to send.
    """
    state = _STATES[transition]
    BREAKER_TRANSITIONS.labels(breaker=family(name), state=state).inc()
    alert, error = _send_alert(broker, settings, name, transition)
    level = logging.WARNING if transition == "opened" else logging.INFO
    log_event(logger, level, _EVENTS[transition], breaker=name, alert=alert, alert_error=error)


def _send_alert(
    broker: Broker, settings: Settings, name: str, transition: Transition
) -> tuple[str, str | None]:
    if ALERT_ACTOR not in broker.get_declared_actors():
        return "no_actor", None
    from service.sending import send  # sending imports the middleware stack, which imports us

    recovery = settings.breaker_recovery_timeout
    details = {
        "opened": f"{settings.breaker_failure_threshold} consecutive failures (or a failed trial); "
        f"messages wait {recovery:g} s, then one trial call goes through",
        "half_open": "one trial call is let through; its outcome closes or reopens the breaker",
        "closed": "the trial call succeeded; messages flow again",
    }[transition]
    try:
        send(
            ALERT_ACTOR,
            kwargs={
                "level": "critical" if transition == "opened" else "info",
                "title": f"circuit breaker {name} {_STATES[transition].replace('_', '-')}",
                "details": details,
                "dedupe_key": f"breaker:{name}:{_STATES[transition]}",
            },
        )
    except Exception as error:  # an alert must never fail the message that moved the breaker
        return "failed", error_summary(error)
    return "sent", None
