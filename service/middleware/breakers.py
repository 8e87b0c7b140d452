"""Breakers: circuit breakers around actors, shared by every worker process through Redis.

Guarantees:
  * An actor with a ``circuit_breaker`` runs only while its breaker lets it: closed, or as the
    one trial of a half-open breaker (one across all processes and pods).
  * While the breaker is open (or its trial runs), the message is **delayed**: a copy is
    enqueued with a delay until the breaker may let a call through (the end of the open period,
    or of the trial's lease, at most ``recovery``) plus up to 10 % of ``recovery`` of jitter, and
    only then is the original acked (skipped). It is not failed, its ``retries`` is unchanged,
    and it is counted in ``callboard_breaker_delayed_total{breaker}``. If the copy cannot be
    enqueued, the original goes back to its queue (disposition ``REQUEUE``), never lost.
  * How the run ended is reported: success; failure (any exception that will be retried or has
    exhausted its retries); or neutral, for exceptions in ``throws`` (the remote answered and
    refused for good, as a 4xx or a 550 does), which neither count nor close.
  * When Redis cannot be reached the breaker is bypassed (logged ``breaker.unavailable``): an
    outage of the breaker's store must not stop the work it guards.

Options (actor only, never per message, so a producer cannot name breakers at will):
  circuit_breaker(str | callable): the breaker's name, or ``(args, kwargs) -> name | None`` for a
    breaker per destination (``webhook:<host>``). Also a policy field. Unset: no breaker.

Parameters:
  settings(Settings): ``breaker_failure_threshold`` (5) and ``breaker_recovery_timeout`` (60 s).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import redis
from dramatiq import Broker, Middleware
from dramatiq.common import current_millis
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import SkipMessage

from config.policies import DEFAULT_POLICY
from config.settings import Settings
from service.breakers import BreakerStore, Decision, announce, family, store_for
from service.breakers.store import Outcome
from service.brokers.disposition import Disposition, mark
from service.logs import log_event
from service.metrics.definitions import BREAKER_DELAYED
from service.middleware.options import option
from service.middleware.outcomes import mark_due, mark_skipped
from service.middleware.retries import MAX_DELAY_MS, error_summary

logger = logging.getLogger(__name__)

_HELD = "_callboard_breaker"

#: Seconds a trial's lease outlasts its message's hard time limit.
_TRIAL_GRACE = 10.0

#: Share of the recovery timeout added at random to a delay, so delayed messages spread out.
_JITTER = 0.1


class Breakers(Middleware):
    """Delay messages whose circuit breaker is open; report how the others ended."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.recovery = settings.breaker_recovery_timeout
        self._store: BreakerStore | None = None

    @property
    def actor_options(self) -> set[str]:
        return {"circuit_breaker"}

    def before_process_message(self, broker: Broker, message: Any) -> None:
        name = _breaker_name(broker, message)
        if name is None:
            return
        store = self._get_store(broker)
        if store is None:
            return
        time_limit = option(broker, message, "time_limit", DEFAULT_POLICY.time_limit * 1000) / 1000
        try:
            decision = store.acquire(name, trial_lease=time_limit + _TRIAL_GRACE)
        except redis.RedisError as error:
            log_event(
                logger, logging.WARNING, "breaker.unavailable", breaker=name, error=error_summary(error)
            )
            return
        if decision.transition is not None:
            announce(broker, self.settings, name, decision.transition)
        if decision.allowed:
            message.__dict__[_HELD] = (name, decision.trial)
            return
        self._delay(broker, message, name, decision)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        held = message.__dict__.pop(_HELD, None)
        if held is None:
            return
        outcome: Outcome = "success"
        if exception is not None:
            throws = option(broker, message, "throws")
            outcome = "neutral" if throws and isinstance(exception, throws) else "failure"
        self._report(broker, held, outcome)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        # Skipped after we let it through (a duplicate, say): it proved nothing, free the trial.
        held = message.__dict__.pop(_HELD, None)
        if held is not None:
            self._report(broker, held, "neutral")

    def _report(self, broker: Broker, held: tuple[str, str | None], outcome: Outcome) -> None:
        name, trial = held
        store = self._get_store(broker)
        if store is None:
            return
        try:
            transition = store.record(name, outcome, trial)
        except redis.RedisError as error:
            log_event(
                logger, logging.WARNING, "breaker.unavailable", breaker=name, error=error_summary(error)
            )
            return
        if transition is not None:
            announce(broker, self.settings, name, transition)

    def _delay(self, broker: Broker, message: Any, name: str, decision: Decision) -> None:
        wait = min(decision.wait, self.recovery) + random.uniform(0, _JITTER * self.recovery)
        delay = int(min(wait * 1000, MAX_DELAY_MS))
        # "retries" kept as it was: a delay is not an attempt (and marks the copy as accepted
        # once already, so the size check on enqueue leaves it alone).
        delayed = message.copy(options={"retries": message.options.get("retries", 0)})
        try:
            broker.enqueue(delayed, delay=delay)
        except Exception as error:
            mark(message, Disposition.REQUEUE)
            log_event(logger, logging.ERROR, "message.retry_failed", breaker=name, error=error_summary(error))
        else:
            mark_due(message, current_millis() + delay, "circuit_breaker")
            BREAKER_DELAYED.labels(breaker=family(name)).inc()
            log_event(
                logger, logging.INFO, "breaker.delayed", breaker=name, state=decision.state, delay_ms=delay
            )
        mark_skipped(message, "skipped")
        raise SkipMessage()

    def _get_store(self, broker: Broker) -> BreakerStore | None:
        if self._store is None:
            self._store = store_for(broker, self.settings)
        return self._store


def _breaker_name(broker: Broker, message: Any) -> str | None:
    try:
        declared = broker.get_actor(message.actor_name).options.get("circuit_breaker")
    except ActorNotFound:
        return None
    if callable(declared):
        try:
            name = declared(message.args, message.kwargs)
        except Exception:  # arguments the actor itself will refuse: no breaker for them
            return None
        return str(name) if name else None
    return str(declared) if declared else None
