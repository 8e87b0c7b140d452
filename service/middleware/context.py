"""The running message's context: log fields and the ``request_id`` that travels with messages.

Guarantees:
  * Every log record written while an actor runs carries ``message_id``, ``actor``, ``queue``,
    ``attempt`` and ``request_id``.
  * Every attempt ends with one ``message.finished`` record carrying its ``outcome`` (success,
    retry, dead, expired, skipped) and ``duration_s``: DEBUG for a success, WARNING for a
    failed attempt, INFO for a skip.
  * Every enqueued message carries a ``request_id``: the producer's, else the one of the message
    that is running on this thread (so a chain of actors shares one id), else a new one.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from dramatiq import Broker, Middleware

from service.logs import log_event, message_context, set_message_context
from service.middleware.outcomes import processed_outcome, skipped_outcome

logger = logging.getLogger(__name__)


class MessageContext(Middleware):
    """Set the log context around each message and propagate ``request_id`` to new messages."""

    @property
    def actor_options(self) -> set[str]:
        # Declared here because no single middleware owns them: ``policy`` and ``request_id`` are
        # read by logs and the CLI; ``idempotent`` marks actors safe to run twice and
        # ``periodic`` is periodiq's schedule, both read by the scheduler's validation.
        return {"policy", "request_id", "idempotent", "periodic"}

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        if "request_id" not in message.options:
            running = message_context()
            message.options["request_id"] = (running or {}).get("request_id") or uuid.uuid4().hex

    def before_process_message(self, broker: Broker, message: Any) -> None:
        set_message_context(
            {
                "message_id": message.message_id,
                "actor": message.actor_name,
                "queue": message.queue_name,
                "attempt": message.options.get("retries", 0) + 1,
                "request_id": message.options.get("request_id"),
                "started": time.monotonic(),
                "message": message,  # for the log filter's redaction; not a logged field
            }
        )
        log_event(logger, logging.DEBUG, "message.started")

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        context = message_context() or {}
        duration = time.monotonic() - context.get("started", time.monotonic())
        outcome = processed_outcome(message, exception)
        log_event(
            logger,
            # A line for every success costs ~16 us a message (a tenth of a no-op's throughput)
            # and floods busy pods: successes are DEBUG, everything else stands out.
            logging.DEBUG if outcome == "success" else logging.WARNING,
            "message.finished",
            outcome=outcome,
            duration_s=round(duration, 6),
        )
        set_message_context(None)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        log_event(logger, logging.INFO, "message.finished", outcome=skipped_outcome(message), duration_s=0.0)
        set_message_context(None)
