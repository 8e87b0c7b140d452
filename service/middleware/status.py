"""Status tracking: each message's state, attempts and progress, kept in the state Redis.

Guarantees:
  * An attempt still running at the writer's next flush (within
    ``CALLBOARD_STATUS_FLUSH_INTERVAL`` of its start) is recorded ``started`` (attempt number,
    time seen); every attempt records how it ended:
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

from typing import Any

import redis
from dramatiq import Broker, Middleware

from service.deadletters.capture import death_of
from service.middleware.handback import HandBack
from service.middleware.options import option
from service.middleware.outcomes import due, skipped_outcome
from service.middleware.retries import safe_summary
from service.redaction import Redactor
from service.status import running
from service.status.records import TERMINAL_STATES, ended, group_of, new_record
from service.status.running import PROGRESS
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
        self._broker: Broker | None = None
        self._handback: HandBack | None = None

    @property
    def actor_options(self) -> set[str]:
        return {"track_status"}

    def attach(self, client: redis.Redis | None) -> None:
        """Write to ``client`` (the state Redis); ``None`` leaves tracking off."""
        self.writer = (
            StatusWriter(client, ttl=self.ttl, interval=self.interval) if client is not None else None
        )

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        # The messages running in this process are HandBack's to know (it needs them at
        # shutdown): the writer looks at them for ``started`` records, progress() for its message.
        self._broker = broker
        self._handback = next((m for m in broker.middleware if isinstance(m, HandBack)), None)
        if self.writer is not None and self._handback is not None:
            self.writer.watch(self._running)
            self._handback.on_busy(self.writer.notice)
        running.register(self)

    def current_message(self) -> Any | None:
        """The message the calling worker thread runs, if any (for ``progress()``)."""
        return self._handback.current() if self._handback is not None else None

    def tracks(self, message: Any) -> bool:
        """Whether ``message``'s status is recorded."""
        return self.writer is not None and self._broker is not None and self._tracked(self._broker, message)

    def after_enqueue(self, broker: Broker, message: Any, delay: int | None) -> None:
        if self.writer is None or not self._tracked(broker, message):
            return
        now = self.current_message()
        if now is not None and now.message_id == message.message_id:
            return  # a retry or a delay of the running message: its own hooks record that
        eta = message.options.get("eta") if delay else None
        record = new_record(message, "delayed" if eta else "enqueued")
        if eta:
            record["eta"] = eta
        self.writer.put(record, only_if_new=True)

    # No before_process_message: nothing is kept per message while it runs. A ``started``
    # record is written by the writer's next flush if the attempt still runs then (watch).

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        writer = self.writer
        if writer is None:
            return
        # The common case written out (each Python call costs here): the actor's cached setting,
        # a success without progress or group.
        options = message.options
        tracked = self._by_actor.get(message.actor_name) if "track_status" not in options else None
        if tracked is None:
            tracked = self._tracked(broker, message)
        if not tracked:
            return
        if exception is None:
            if PROGRESS in message.__dict__ or "callboard_group" in options:
                self._end(message, "succeeded")
            else:
                writer.end(message.message_id, ended(message, "succeeded"))
        elif message.failed:
            self._dead(broker, message, exception)
        else:
            fields: dict[str, Any] = {"error": safe_summary(broker, message, exception)}
            when = due(message)
            if when is not None:
                fields["eta"] = when[0]
            self._end(message, "retrying", fields)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        if self.writer is None or not self._tracked(broker, message):
            return
        when = due(message)
        if message.failed:
            self._dead(broker, message, message._exception)
        elif when is not None:
            self._end(message, "delayed", {"eta": when[0], "reason": when[1]})
        elif skipped_outcome(message) == "expired":
            self._end(message, "expired")
        else:
            self._end(message, "skipped", {"reason": "duplicate"})

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        if self.writer is not None:
            self.writer.close()

    def _dead(self, broker: Broker, message: Any, error: BaseException | None) -> None:
        death = death_of(message)
        fields: dict[str, Any] = {"reason": death.reason if death is not None else "unknown"}
        if error is not None:
            fields["error"] = safe_summary(broker, message, error)
        self._end(message, "dead", fields)

    def _end(self, message: Any, to: str, fields: dict[str, Any] | None = None) -> None:
        writer = self.writer
        assert writer is not None
        progress: running.Progress | None = message.__dict__.get(PROGRESS)
        if progress is not None:
            fields = {**(fields or {}), "progress": progress.report}
        group_id = group_of(message) if "callboard_group" in message.options else None
        writer.end(message.message_id, ended(message, to, fields, group_id))
        if group_id is not None and to in TERMINAL_STATES:
            writer.count(group_id, "done" if to in ("succeeded", "skipped") else "failed")

    def _running(self) -> list[Any]:
        # The writer's view of the running messages whose status is tracked (its own thread).
        assert self._handback is not None and self._broker is not None
        broker = self._broker
        return [message for message in self._handback.running() if self._tracked(broker, message)]

    def _tracked(self, broker: Broker, message: Any) -> bool:
        # option() costs an actor lookup a call: the actor's (or policy's) value is cached.
        value = message.options.get("track_status")
        if value is not None:
            return bool(value)
        tracked = self._by_actor.get(message.actor_name)
        if tracked is None:
            tracked = self._by_actor[message.actor_name] = bool(option(broker, message, "track_status", True))
        return tracked
