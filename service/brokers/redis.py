"""Dramatiq's Redis broker with what Callboard adds on top of it.

* Idle consumers block on a wake-up event instead of sleeping (:mod:`service.brokers.wakeup`);
  a consumer whose prefetch is full waits for an ack instead of polling Redis.
* :meth:`CallboardRedisBroker.enqueue_many` pushes a batch in one pipelined round trip.
* Consumers honour :mod:`service.brokers.disposition` (requeue instead of ack, or skip the ack of
  a message already handed back), and :meth:`hand_back_unacked` returns everything this process
  still holds to its queues.

Keys stay in Dramatiq's namespace (``dramatiq:<queue>``, ``.DQ``, ``.XQ``).
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from service.brokers.disposition import Disposition, disposition_of
from service.brokers.wakeup import NOTIFY_BELOW, NOTIFY_SCRIPT, WakeUps


class CallboardRedisBroker(RedisBroker):
    """A :class:`dramatiq.brokers.redis.RedisBroker` with wake-ups, bulk enqueue and hand-back.

    Parameters:
      url(str): the Redis URL (``redis://``, ``rediss://``, ``unix://``).
      middleware(list): the middleware stack.
      **options: passed to :class:`RedisBroker` (namespace, heartbeat_timeout, ...).
    """

    def __init__(self, *, url: str, middleware: list[Any] | None = None, **options: Any) -> None:
        super().__init__(url=url, middleware=middleware, **options)
        self.wakeups = WakeUps(self.client, self.namespace + ":callboard.wakeup")
        self._notify = self.client.register_script(NOTIFY_SCRIPT)

    @property
    def consumer_class(self) -> type[Consumer]:
        return _CallboardRedisConsumer

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Enqueue one message (Dramatiq's contract) and wake an idle consumer of its queue."""
        return self.enqueue_many([message], delay=delay)[0]

    def enqueue_many(self, messages: list[Message], *, delay: int | None = None) -> list[Message]:
        """Enqueue ``messages`` in one pipelined round trip; returns them as stored.

        Either every message was written or this raises (a pipeline is sent as one request).
        """
        prepared = [self._prepare(message, delay) for message in messages]
        for message in prepared:
            self.emit_before("enqueue", message, delay)
        calls: list[tuple[Script, list[str], list[Any]]] = []
        notify: set[str] = set()
        for message in prepared:
            queue_name = message.queue_name
            calls.append(
                self._dispatch_call(
                    "enqueue", queue_name, message.options["redis_message_id"], message.encode()
                )
            )
            if not queue_name.endswith(".DQ"):
                notify.add(queue_name)
        for queue_name in notify:
            keys = [f"{self.namespace}:{queue_name}"]
            calls.append((self._notify, keys, [self.wakeups.channel, queue_name, NOTIFY_BELOW]))
        try:
            self._run_scripts(calls)
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None
        for message in prepared:
            self.emit_after("enqueue", message, delay)
        return prepared

    def hand_back_unacked(self) -> int:
        """Requeue every message this broker instance fetched and has not acked; returns the count.

        Called when a worker stops: messages still running past the shutdown timeout go back to
        their queues at once instead of waiting for Dramatiq's heartbeat-based recovery.
        """
        count = 0
        for queue_name in self.get_declared_queues() | self.get_declared_delay_queues():
            acks_key = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
            ids = [m.decode() if isinstance(m, bytes) else str(m) for m in self.client.smembers(acks_key)]
            if ids:
                self.do_requeue(queue_name, *ids)
                count += len(ids)
        return count

    def _prepare(self, message: Message, delay: int | None) -> Message:
        # Each enqueue needs its own Redis id: a retried message keeps its message id.
        message = message.copy(options={"redis_message_id": str(uuid4())})
        if delay is not None:
            message = message.copy(
                queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay}
            )
        return message

    def _dispatch_call(
        self, command: str, queue_name: str, *args: Any
    ) -> tuple[Script, list[str], list[Any]]:
        # Same argument layout as RedisBroker._dispatch.
        arguments = [
            command,
            current_millis(),
            queue_name,
            self.broker_id,
            self.heartbeat_timeout,
            self.dead_message_ttl,
            self._should_do_maintenance(command),
            self._max_unpack_size(),
            *args,
        ]
        return self.scripts["dispatch"], [self.namespace], arguments

    def _run_scripts(self, calls: list[tuple[Script, list[str], list[Any]]]) -> None:
        """Run script calls in one pipelined round trip.

        redis-py's pipeline checks ``SCRIPT EXISTS`` before every execute (a second round trip);
        instead we send ``EVALSHA`` straight away and load and rerun only the calls that found
        their script missing (after a Redis restart), so nothing runs twice.
        """
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = pipe.execute(raise_on_error=False)
        missing = [
            call for call, result in zip(calls, results, strict=True) if isinstance(result, NoScriptError)
        ]
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, NoScriptError):
                raise result
        if missing:
            for script in {call[0] for call in missing}:
                script.sha = self.client.script_load(script.script)
            self._run_scripts(missing)


class _CallboardRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting on events instead of sleeping, honouring dispositions."""

    def __init__(self, broker: CallboardRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self._wakeup = broker.wakeups.event(queue_name)
        self._capacity = threading.Event()

    def ack(self, message: MessageProxy) -> None:
        disposition = disposition_of(message)
        if disposition is Disposition.RELEASED:
            self.queued_message_ids.discard(message.message_id)
        elif disposition is Disposition.REQUEUE:
            try:
                self.broker.do_requeue(self.queue_name, message.options["redis_message_id"])
            except redis.ConnectionError as error:
                raise ConnectionClosed(error) from None
            self.queued_message_ids.discard(message.message_id)
        else:
            super().ack(message)
        self._capacity.set()

    def nack(self, message: MessageProxy) -> None:
        if disposition_of(message) is Disposition.RELEASED:
            self.queued_message_ids.discard(message.message_id)
        else:
            super().nack(message)
        self._capacity.set()

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # an id whose body is gone (see dramatiq#266)
                        continue
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)

                free = self.prefetch - self.outstanding_message_count
                if free <= 0:
                    # Every prefetched message is still running: wait for an ack, not for Redis.
                    self._capacity.clear()
                    if self.prefetch - self.outstanding_message_count <= 0:
                        self._capacity.wait(self.timeout / 1000)
                    return None

                self._wakeup.clear()
                self.message_cache = self.broker.do_fetch(self.queue_name, free)
                if not self.message_cache:
                    self._wakeup.wait(self.timeout / 1000)
                    return None
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None
