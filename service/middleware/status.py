"""Status tracking: each message's state, attempts and progress, kept in the state Redis.

Guarantees:
  * Each attempt a worker takes records ``started`` (attempt number, time), then how it ended:
    ``succeeded``; ``retrying`` with the next attempt's ``eta`` (as ``Retries`` decided it);
    ``dead`` with its ``reason`` and a redacted one-line ``error``; ``expired``; ``delayed`` with
    ``eta`` and reason ``circuit_breaker`` when an open breaker held it back; ``skipped`` (reason
    ``duplicate``) for an idempotent duplicate. Its ``after`` hooks run after ``Retries``', so
    the state is the decided one.
  * Records are written by the process's :class:`~service.status.writer.StatusWriter`: gathered
    for ``CALLBOARD_STATUS_FLUSH_INTERVAL`` and sent in one pipelined round trip, each kept
    ``CALLBOARD_STATUS_TTL`` after its last change. What a SIGKILL can lose is stated there.
  * A producer records ``enqueued`` (or ``delayed``, with its ``eta``) after the broker has the
    message, in its own writer: no extra round trip on ``send``'s path, and set only if the
    message has no record yet, so a late producer flush never hides what a worker recorded. A
    retry or breaker delay re-enqueued by the running message does not count as a send.
  * A child of a :func:`service.workflows.group` adds one to its group's ``done`` or ``failed``
    count when it ends for good.
  * With no state Redis (RabbitMQ without ``CALLBOARD_REDIS_URL``) nothing is recorded.

Options (message → actor → policy):
  track_status(bool): record this actor's messages. Defaults to True (policy ``track_status``).
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq import Broker, Middleware

from service.deadletters.capture import death_of
from service.middleware.options import option
from service.middleware.outcomes import due, skipped_outcome
from service.middleware.retries import safe_summary
from service.redaction import Redactor
from service.status import running
from service.status.records import TERMINAL_STATES, ended, group_of, new_record
from service.status.running import RUNNING
from service.status.writer import StatusWriter


class StatusTracking(Middleware):
    """Record every message's transitions through a per-process :class:`StatusWriter`.

    Parameters:
      ttl(float): seconds a record is kept after its last change (``CALLBOARD_STATUS_TTL``).
      interval(float): seconds between writes (``CALLBOARD_STATUS_FLUSH_INTERVAL``).
      sensitive_fields(list[str]): what redaction treats as sensitive, for progress notes.
    """

    def __init__(self, *, ttl: float, interval: float, sensitive_fields: list[str]) -> None:
        self.ttl = ttl
        self.interval = interval
        self.redactor = Redactor(sensitive_fields)
        self.writer: StatusWriter | None = None
        self._by_actor: dict[str, bool] = {}

    @property
    def actor_options(self) -> set[str]:
        return {"track_status"}

    def attach(self, client: redis.Redis | None) -> None:
        """Write to ``client`` (the state Redis); ``None`` leaves tracking off."""
        self.writer = (
            StatusWriter(client, ttl=self.ttl, interval=self.interval) if client is not None else None
        )

    def after_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        if self.writer is None or not self._tracked(broker, message):
            return
        now = running.current()
        if now is not None and now.message_id == message.message_id:
            return  # a retry or a delay of the running message: its own hooks record that
        eta = message.options.get("eta") if delay else None
        record = new_record(message, "delayed" if eta else "enqueued")
        if eta:
            record["eta"] = eta
        self.writer.put(record, only_if_new=True)

    def before_process_message(self, broker: Broker, message: Any) -> None:
        # Runs for every message: few calls, since each Python call costs here.
        writer = self.writer
        if writer is None or not self._tracked(broker, message):
            return
        state = running.Running(message, message.message_id, writer, self.redactor, time.time())
        RUNNING.set(state)
        writer.start(state)

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        state = RUNNING.get()
        if state is None or state.message is not message:
            return  # not tracked
        RUNNING.set(None)
        if exception is None:
            self._end(state, "succeeded")
        elif message.failed:
            self._dead(broker, message, state, exception)
        else:
            fields: dict[str, Any] = {"error": safe_summary(broker, message, exception)}
            when = due(message)
            if when is not None:
                fields["eta"] = when[0]
            self._end(state, "retrying", fields)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        state = self._leave(message)
        if state is None:
            if message.failed and self.writer is not None:  # rejected before our before hook ran
                state = running.Running(message, message.message_id, self.writer, None, time.time())
                self._dead(broker, message, state, message._exception)
            return
        when = due(message)
        if message.failed:
            self._dead(broker, message, state, message._exception)
        elif when is not None:
            self._end(state, "delayed", {"eta": when[0], "reason": when[1]})
        elif skipped_outcome(message) == "expired":
            self._end(state, "expired")
        else:
            self._end(state, "skipped", {"reason": "duplicate"})

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self.writer is not None:
            self.writer.close()

    def _dead(
        self, broker: Broker, message: Any, state: running.Running, error: BaseException | None
    ) -> None:
        death = death_of(message)
        fields: dict[str, Any] = {"reason": death.reason if death is not None else "unknown"}
        if error is not None:
            fields["error"] = safe_summary(broker, message, error)
        self._end(state, "dead", fields)

    @staticmethod
    def _end(state: running.Running, to: str, fields: dict[str, Any] | None = None) -> None:
        message = state.message
        if state.progress is not None:
            fields = {**(fields or {}), "progress": state.progress}
        group_id = group_of(message) if "callboard_group" in message.options else None
        state.writer.end(state.message_id, ended(message, to, fields, group_id))
        if group_id is not None and to in TERMINAL_STATES:
            state.writer.count(group_id, "done" if to in ("succeeded", "skipped") else "failed")

    def _tracked(self, broker: Broker, message: Any) -> bool:
        # option() costs an actor lookup a call: the actor's (or policy's) value is cached.
        value = message.options.get("track_status")
        if value is not None:
            return bool(value)
        tracked = self._by_actor.get(message.actor_name)
        if tracked is None:
            tracked = self._by_actor[message.actor_name] = bool(option(broker, message, "track_status", True))
        return tracked

    @staticmethod
    def _leave(message: Any) -> running.Running | None:
        # The state before_process_message set, if it ran for this message on this thread.
        state = RUNNING.get()
        if state is None or state.message is not message:
            return None
        RUNNING.set(None)
        return state
