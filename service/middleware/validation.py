"""Validation: no message over the size limit is sent, and none with bad options or on a queue
its actor may not use is run.

Guarantees:
  * ``before_enqueue``: a new message (not a retry, a delayed message coming due or a requeued
    dead letter) whose encoded body is longer than ``max_message_bytes`` raises
    :class:`MessageTooLargeError` (a ``BadInputError``), one line naming the actor and both
    sizes, and is not sent. That covers Dramatiq's ``actor.send()`` from any producer or actor;
    :func:`service.sending.send` checks that and more before anything is sent.
  * ``before_process_message``, right after ``MessageContext``: a message with an option of the
    wrong type or out of range (:func:`service.intake.option_problem`) is dead-lettered with
    reason ``bad_options``; a message on a queue served sooner than its actor's own
    (:func:`service.intake.queue_problem`) with reason ``wrong_queue``. Neither runs, and no
    later middleware reads its options. The log shows ``message.rejected``.

Callboard's consumers make the option check already when they fetch a message
(:mod:`service.intake`); the check here covers any other consumer.

Parameters:
  max_message_bytes(int): the longest encoded message a producer may send.
    Defaults to ``CALLBOARD_MAX_MESSAGE_BYTES`` (256 KiB), through the factory.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, NoReturn

from dramatiq import Broker, Middleware
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import MiddlewareError, SkipMessage
from dramatiq.worker import ConsumerThread

from service import intake
from service.deadletters.capture import mark_dead
from service.errors import BadInputError
from service.logs import log_event
from service.middleware.outcomes import mark_skipped

logger = logging.getLogger(__name__)


class MessageTooLargeError(BadInputError, MiddlewareError):
    """The encoded message is longer than ``CALLBOARD_MAX_MESSAGE_BYTES``; it was not sent.

    A ``MiddlewareError`` too, because Dramatiq logs and swallows any other exception raised in
    a ``before_*`` hook, and the message would be sent anyway.
    """

    @classmethod
    def of(cls, actor_name: str, size: int, limit: int) -> MessageTooLargeError:
        """The error, with its one line, for a message of ``size`` bytes."""
        return cls(
            f"{actor_name}: message of {size:,} bytes is over the limit of {limit:,} bytes "
            "(CALLBOARD_MAX_MESSAGE_BYTES); send a reference to the data instead"
        )


class Validation(Middleware):
    """Refuse oversized messages at send; dead-letter bad options and wrong queues at receive."""

    def __init__(self, *, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def before_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        # A retry, a delayed message coming due, or a dead letter sent again was accepted by a
        # worker once already, and may have grown by what Callboard adds (within the receive
        # allowance); refusing it now would requeue a retry forever, restart a consumer thread
        # every second, or fail a whole batch of `dlq requeue`.
        if (
            "retries" in message.options
            or "requeued_from" in message.options
            or isinstance(threading.current_thread(), ConsumerThread)
        ):
            return
        size = len(message.encode())
        if size > self.max_message_bytes:
            raise MessageTooLargeError.of(message.actor_name, size, self.max_message_bytes)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        rejected: intake.MessageRejected | None = None
        problem = intake.option_problem(message.options)
        if problem is not None:
            rejected = intake.BadOptions(problem, message)
        else:
            try:
                actor = broker.get_actor(message.actor_name)
            except ActorNotFound:  # Dramatiq's consumer fails these before they get here
                return
            problem = intake.queue_problem(actor.actor_name, actor.queue_name, message.queue_name)
            if problem is not None:
                rejected = intake.WrongQueue(problem, message)
        if rejected is not None:
            reject(message, rejected)


def reject(message: Any, rejected: intake.MessageRejected) -> NoReturn:
    """Dead-letter ``message`` with ``rejected``'s reason without running it: log
    ``message.rejected``, mark it dead and skipped, and raise ``SkipMessage``."""
    log_event(
        logger,
        logging.ERROR,
        "message.rejected",
        reason=rejected.reason,
        error=str(rejected),
        message_id=message.message_id,
        actor=message.actor_name,
        queue=message.queue_name,
    )
    mark_dead(message, rejected.reason, rejected, 0)
    mark_skipped(message, "dead")
    raise SkipMessage()
