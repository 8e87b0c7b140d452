"""Dramatiq's RabbitMQ broker with Callboard's dispositions and publisher confirms.

Publisher confirms are always on: ``send`` must never return a message id for a message RabbitMQ
did not store. Unacked messages go back to their queue when a consumer's connection closes, so
handing back at shutdown needs no command here.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pika
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from service.brokers.disposition import Disposition, disposition_of


class CallboardRabbitmqBroker(RabbitmqBroker):
    """A :class:`dramatiq.brokers.rabbitmq.RabbitmqBroker` with confirms and dispositions.

    Parameters:
      url(str): the AMQP URL.
      middleware(list): the middleware stack.
    """

    def __init__(self, *, url: str, middleware: list[Any] | None = None, **options: Any) -> None:
        options.setdefault("confirm_delivery", True)
        super().__init__(url=url, middleware=middleware, **options)

    @property
    def consumer_class(self) -> type[Consumer]:
        return _CallboardRabbitmqConsumer

    def enqueue_many(self, messages: list[Message], *, delay: int | None = None) -> list[Message]:
        """Enqueue ``messages`` one after another on this thread's channel (each one confirmed)."""
        return [self.enqueue(message, delay=delay) for message in messages]

    def hand_back_unacked(self) -> int:
        """Nothing to do: RabbitMQ requeues unacked messages when the consumer's connection closes."""
        return 0


class _CallboardRabbitmqConsumer(_RabbitmqConsumer):
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
        else:
            super().nack(message)
