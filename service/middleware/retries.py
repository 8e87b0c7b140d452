"""Retries with exponential backoff and full jitter, without ever losing the message.

Guarantees:
  * Retry ``n`` (from 0) waits ``uniform(min_backoff, min(max_backoff, min_backoff * 2**(n+1)))``:
    full jitter above a floor, so retries of a failed batch spread out instead of stampeding.
  * An exception in ``throws`` is not retried, nor is a call whose arguments do not fit the
    actor's signature (reason ``bad_arguments``); ``retry_when(retries, exception)``, when set,
    replaces the ``max_retries`` test. A message that will not run again is failed (nacked), so
    it reaches the broker's dead-letter queue with the reason logged.
  * If the retry cannot be enqueued (broker down), the original message is requeued instead of
    acked (Dramatiq's own Retries swallows the error and acks, losing the message).
  * An actor that raises :class:`RetryAfter` (an HTTP 429's ``Retry-After``) is retried after
    the delay it asked for, bounded by ``max_backoff``, instead of the backoff; it uses a retry.

Options (message → actor → policy → default), times in milliseconds:
  max_retries(int): retries after the first attempt. Defaults to the ``default`` policy's 3.
  min_backoff(int), max_backoff(int): the backoff bounds. Default 1 s and 5 min.
  throws(type | tuple): exceptions that are never retried.
  retry_when(callable): ``(retries_so_far, exception) -> bool``.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.errors import Retry

from config.policies import DEFAULT_POLICY
from config.settings import get_settings
from service.brokers.disposition import Disposition, mark
from service.deadletters.capture import mark_dead
from service.logs import log_event
from service.middleware.options import option
from service.middleware.outcomes import mark_due
from service.middleware.time_limits import HardTimeLimitExceeded
from service.redaction import Redactor, sensitive_values

logger = logging.getLogger(__name__)

#: Redis and RabbitMQ delayed messages must be due within 7 days.
MAX_DELAY_MS = 7 * 86400 * 1000


class RetryAfter(Retry):
    """The destination asked to be called again after ``delay`` milliseconds (HTTP 429
    ``Retry-After``): retried then, never later than the message's ``max_backoff``."""

    def __init__(self, message: str, delay: int) -> None:
        super().__init__(message, delay=delay)


def backoff_delay(retries: int, min_backoff: float, max_backoff: float) -> float:
    """The delay before retry number ``retries`` (0-based): full jitter above ``min_backoff``."""
    ceiling = min(max_backoff, min_backoff * 2 ** min(retries + 1, 62))
    return random.uniform(min_backoff, max(min_backoff, ceiling))


def _arguments_fit(broker: Broker, message: Any) -> bool:
    # Only checked after a TypeError, so binding costs nothing on the hot path.
    try:
        inspect.signature(broker.get_actor(message.actor_name).fn).bind(*message.args, **message.kwargs)
    except TypeError:
        return False
    except Exception:  # no actor or no signature: cannot tell, so treat it as an ordinary error
        return True
    return True


def safe_summary(broker: Broker, message: Any, exception: BaseException) -> str:
    """:func:`error_summary` with the values of the message's sensitive arguments redacted."""
    try:
        fn = broker.get_actor(message.actor_name).fn
    except Exception:
        fn = None
    redactor = Redactor(get_settings().sensitive_fields)
    values = sensitive_values(redactor, fn, message.args, message.kwargs)
    return Redactor.scrub(error_summary(exception), values) or ""


def error_summary(exception: BaseException, limit: int = 500) -> str:
    """``Type: message`` of ``exception``, cut to ``limit`` characters."""
    return f"{type(exception).__name__}: {exception}"[:limit]


class Retries(Middleware):
    """Retry failed messages with backoff and full jitter; requeue when a retry cannot be sent."""

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries", "min_backoff", "max_backoff", "retry_when", "throws"}

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None or message.failed:
            return
        retries = message.options.get("retries", 0)
        throws = option(broker, message, "throws")
        if throws and isinstance(exception, throws):
            self._give_up(broker, message, "non_retryable", exception, retries)
            return
        if isinstance(exception, TypeError) and not _arguments_fit(broker, message):
            self._give_up(broker, message, "bad_arguments", exception, retries)
            return
        retry_when = option(broker, message, "retry_when")
        if retry_when is not None:
            again = bool(retry_when(retries, exception))
        else:
            again = retries < option(broker, message, "max_retries", DEFAULT_POLICY.max_retries)
        if not again:
            reason = "time_limit" if isinstance(exception, HardTimeLimitExceeded) else "exhausted"
            self._give_up(broker, message, reason, exception, retries)
            return

        delay: float
        max_backoff = option(broker, message, "max_backoff", DEFAULT_POLICY.max_backoff * 1000)
        if isinstance(exception, RetryAfter) and exception.delay is not None:
            delay = min(exception.delay, max_backoff)
        elif isinstance(exception, Retry) and exception.delay is not None:
            delay = exception.delay
        else:
            delay = backoff_delay(
                retries,
                option(broker, message, "min_backoff", DEFAULT_POLICY.min_backoff * 1000),
                max_backoff,
            )
        delay = int(min(delay, MAX_DELAY_MS))
        now = int(time.time() * 1000)
        summary = safe_summary(broker, message, exception)
        retry = message.copy(
            options={
                "retries": retries + 1,
                "last_error": summary,
                "requeue_timestamp": now,
                "first_failed_at": message.options.get("first_failed_at", now),
            }
        )
        try:
            broker.enqueue(retry, delay=delay)
        except Exception as error:
            # Acking now would lose the message: put the original back instead.
            mark(message, Disposition.REQUEUE)
            log_event(logger, logging.ERROR, "message.retry_failed", error=error_summary(error))
            return
        mark_due(message, now + delay, "retry")
        log_event(logger, logging.INFO, "message.retried", delay_ms=delay, error=summary)

    def _give_up(
        self, broker: Broker, message: Any, reason: str, exception: BaseException, retries: int
    ) -> None:
        mark_dead(message, reason, exception, retries + 1)
        log_event(
            logger,
            logging.ERROR,
            "message.dead",
            reason=reason,
            attempts=retries + 1,
            error=safe_summary(broker, message, exception),
        )
