"""Expiry: a message older than its ``max_age`` is skipped, counted as expired, not failed.

Dramatiq's AgeLimit fails expired messages, which would dead-letter every stale scheduled tick.
Here an expired message is acked and reported (event ``message.expired``, the expired hook); it
is dead-lettered with reason ``expired`` only when its actor or policy sets ``keep_expired``.

Options (message → actor → policy):
  max_age(int): milliseconds from enqueue after which the message expires. Unset: never.
  keep_expired(bool): dead-letter expired messages instead of dropping them. Defaults to False.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.common import current_millis
from dramatiq.middleware import SkipMessage

from service.deadletters.capture import mark_dead
from service.deadletters.hooks import emit_expired
from service.logs import log_event
from service.middleware.options import option
from service.middleware.outcomes import mark_skipped

logger = logging.getLogger(__name__)


class MessageExpired(Exception):
    """The message was older than its ``max_age`` when a worker got to it."""


class Expiry(Middleware):
    """Skip messages past their ``max_age``; keep them as dead letters only if asked to."""

    @property
    def actor_options(self) -> set[str]:
        return {"max_age", "keep_expired"}

    def before_process_message(self, broker: Broker, message: Any) -> None:
        max_age = option(broker, message, "max_age")
        if not max_age:
            return
        age = current_millis() - message.message_timestamp
        if age <= max_age:
            return
        log_event(logger, logging.INFO, "message.expired", age_ms=age, max_age_ms=max_age)
        emit_expired(message.queue_name, message.actor_name)
        if option(broker, message, "keep_expired", False):
            error = MessageExpired(f"{age} ms old, max_age {max_age} ms")
            message.stuff_exception(error)
            mark_dead(message, "expired", error, message.options.get("retries", 0))
        mark_skipped(message, "expired")
        raise SkipMessage()
