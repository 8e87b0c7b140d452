"""Dramatiq's RabbitMQ broker with Callboard's dispositions and publisher confirms.

Publisher confirms are always on: ``send`` must never return a message id for a message RabbitMQ
did not store. Unacked messages go back to their queue when a consumer's connection closes, so
handing back at shutdown needs no command here.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import Any

import pika
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from config.settings import get_settings
from service import intake
from service.brokers.disposition import Disposition, disposition_of
from service.brokers.proxy import expose_fields
from service.brokers.stats import QueueStats
from service.deadletters.capture import DeadEntry, dead_body, log_rejected, rejected_body

logger = logging.getLogger(__name__)


class CallboardRabbitmqBroker(RabbitmqBroker):
    """A :class:`dramatiq.brokers.rabbitmq.RabbitmqBroker` with confirms and dispositions.

    Parameters:
      url(str): the AMQP URL.
      middleware(list): the middleware stack.
    """

    def __init__(self, *, url: str, middleware: list[Any] | None = None, **options: Any) -> None:
        options.setdefault("confirm_delivery", True)
        super().__init__(url=url, middleware=middleware, **options)
        # Only the mover's thread reads dead letters, on a connection of its own.
        self._dead_connection: Any = None
        self._dead_channel: Any = None

    @property
    def consumer_class(self) -> type[Consumer]:
        return _CallboardRabbitmqConsumer

    def enqueue_many(self, messages: list[Message], *, delay: int | None = None) -> list[Message]:
        """Enqueue ``messages`` one after another on this thread's channel (each one confirmed)."""
        return [self.enqueue(message, delay=delay) for message in messages]

    def hand_back_unacked(self) -> int:
        """Nothing to do: RabbitMQ requeues unacked messages when the consumer's connection closes."""
        return 0

    def queue_stats(self, queue_name: str) -> QueueStats:
        """Waiting and delayed counts from passive declares (RabbitMQ does not show message ages,
        and counts a delayed message held by a worker as unacked, not as waiting)."""
        counts = []
        for name in (queue_name, dq_name(queue_name)):
            try:
                counts.append(self.channel.queue_declare(name, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:  # never declared: nothing in it
                del self.channel
                counts.append(0)
        return QueueStats(queue_name, counts[0], None, counts[1], None)

    def publish_dead(self, queue_name: str, body: bytes) -> None:
        """Publish ``body`` straight to ``queue_name``'s dead-letter queue (confirmed)."""
        self.channel.basic_publish(
            exchange="",
            routing_key=xq_name(queue_name),
            body=body,
            properties=pika.BasicProperties(delivery_mode=2),
        )

    def fetch_dead(self, limit: int) -> list[DeadEntry]:
        """Take up to ``limit`` messages off the declared queues' dead-letter queues, unacked.

        They stay with this process until :meth:`forget_dead` acks them (stored) or
        :meth:`release_dead` gives them back (the store failed); a crash gives them back too.
        """
        if self._dead_channel is None or self._dead_channel.is_closed:
            self._dead_connection = pika.BlockingConnection(self.parameters)
            self._dead_channel = self._dead_connection.channel()
        channel = self._dead_channel
        entries: list[DeadEntry] = []
        for queue_name in sorted(self.get_declared_queues()):
            while len(entries) < limit:
                try:
                    method, _, body = channel.basic_get(xq_name(queue_name), auto_ack=False)
                except pika.exceptions.ChannelClosedByBroker:  # the queue was never declared
                    channel = self._dead_channel = self._dead_connection.channel()
                    break
                if method is None:
                    break
                entries.append(DeadEntry(str(method.delivery_tag), queue_name, body, stable=False))
        return entries

    def forget_dead(self, entries: list[DeadEntry]) -> None:
        """Ack stored ``entries``: RabbitMQ deletes them."""
        for entry in entries:
            self._dead_channel.basic_ack(int(entry.ref))

    def release_dead(self, entries: list[DeadEntry]) -> None:
        """Give ``entries`` back to their dead-letter queues (they could not be stored)."""
        for entry in entries:
            self._dead_channel.basic_nack(int(entry.ref), requeue=True)

    def close(self) -> None:
        """Close Dramatiq's connections and the dead-letter reader's."""
        if self._dead_connection is not None and self._dead_connection.is_open:
            with contextlib.suppress(Exception):
                self._dead_connection.close()
        super().close()


class _CallboardRabbitmqConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, honouring dispositions, recording why a message died, and
    dead-lettering every body that :func:`service.intake.accept` refuses with its reason.

    Dramatiq's own consumer nacks a body that does not decode (RabbitMQ then dead-letters the
    original body, without a reason, and Dramatiq logs the whole body with a traceback), and
    passes any body that decodes to the worker, whatever its field types or queue.
    """

    def __init__(self, broker: CallboardRabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self._limit = intake.receive_limit(get_settings().max_message_bytes)

    def __next__(self) -> MessageProxy | None:
        # Dramatiq's fetch, then intake instead of its bare decode.
        try:
            method, _, body = next(self.iterator)
            if method is None:
                return None
        except (
            AssertionError,
            pika.exceptions.AMQPConnectionError,
            pika.exceptions.AMQPChannelError,
        ) as error:
            # A queue that disappeared is declared again when the consumer restarts.
            if getattr(error, "reply_code", None) == 404:
                self.broker.queues_pending.add(q_name(self.queue_name))
            raise ConnectionClosed(error) from None
        try:
            message = intake.accept(body, self.queue_name, self._limit)
        except intake.MessageRejected as rejected:
            self._reject(method.delivery_tag, body, rejected)
            return None
        self.known_tags.add(method.delivery_tag)
        return expose_fields(_RabbitmqMessage(method.redelivered, method.delivery_tag, message))

    def _reject(self, tag: int, body: bytes, rejected: intake.MessageRejected) -> None:
        """Publish ``body``'s dead letter with its reason (confirmed), then ack the delivery."""
        log_rejected(logger, self.queue_name, rejected)
        try:
            self.broker.publish_dead(self.queue_name, rejected_body(body, rejected))
            # On this thread, which owns the consumer's channel; a crash before the ack
            # redelivers the body, and it is rejected again.
            self.channel.basic_ack(tag)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as error:
            raise ConnectionClosed(error) from None

    def ack(self, message: MessageProxy) -> None:
        disposition = disposition_of(message)
        if disposition is Disposition.RELEASED:
            self.known_tags.discard(message._tag)
        elif disposition is Disposition.REQUEUE:
            try:
                self.known_tags.discard(message._tag)
                self.connection.add_callback_threadsafe(
                    partial(self.channel.basic_nack, message._tag, requeue=True)
                )
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as error:
                raise ConnectionClosed(error) from None
        else:
            super().ack(message)

    def nack(self, message: MessageProxy) -> None:
        if disposition_of(message) is Disposition.RELEASED:
            self.known_tags.discard(message._tag)
            return
        # RabbitMQ's own dead-lettering would keep the original body; publish the body with its
        # reason (confirmed) and ack the original instead. A crash in between runs it again.
        try:
            self.broker.publish_dead(self.queue_name, dead_body(message))
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as error:
            raise ConnectionClosed(error) from None
        super().ack(message)
