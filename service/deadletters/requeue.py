"""Requeue dead letters: a fresh message with the same arguments and a new retry budget.

Bulk requeue streams the selection in batches (memory flat in N) and claims each batch before
sending, so running it twice, or twice at once, requeues no dead letter twice. The new message id
is derived from the claim (``uuid5(token, dead letter id)``): if the process dies between sending
and recording, the next run sends again under the same id, which idempotency can collapse.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dramatiq import Broker, Message

from config.settings import Settings, get_settings
from service.deadletters import store
from service.deadletters.model import DeadLetter
from service.errors import CallboardError
from service.sealing import SealError, unseal

#: Options of the dead message that must not carry over: the new message starts afresh.
_DROPPED_OPTIONS = {
    "retries",
    "dead",
    "eta",
    "redis_message_id",
    "traceback",
    "last_error",
    "requeue_timestamp",
    "first_failed_at",
}


@dataclass
class RequeueResult:
    """What a requeue did: dead letter id → new message id, and what it skipped with why."""

    sent: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    count: int = 0


def _message(row: DeadLetter, token: str, settings: Settings) -> Message[Any]:
    if row.sealed_payload is None:
        raise CallboardError("the body was not a decodable message; nothing to requeue")
    payload = json.loads(unseal(row.sealed_payload, settings))
    # The original options are sealed with the arguments (the readable copy is redacted).
    original = payload.get("options", json.loads(row.options or "{}"))
    options = {key: value for key, value in original.items() if key not in _DROPPED_OPTIONS}
    options["requeued_from"] = row.id
    return Message(
        queue_name=row.queue,
        actor_name=row.actor or "",
        args=tuple(payload["args"]),
        kwargs=payload["kwargs"],
        options=options,
        message_id=str(uuid.uuid5(uuid.UUID(token), str(row.id))),
    )


def requeue(
    selection: store.Selection,
    broker: Broker,
    *,
    batch_size: int = store.BATCH_SIZE,
    keep_ids: bool = True,
    on_batch: Callable[[int], None] | None = None,
    url: str | None = None,
) -> RequeueResult:
    """Requeue every dead letter of ``selection`` (state ``dead``) on ``broker``.

    ``keep_ids=False`` keeps only the count (for very large runs). A dead letter that cannot be
    requeued (undecodable body, sealed with another key) stays dead and is listed in ``skipped``.
    Raises whatever the broker raises if it is unreachable; the batch in hand is released first.
    """
    settings = get_settings()
    token = str(uuid.uuid4())
    result = RequeueResult()
    enqueue_many = getattr(broker, "enqueue_many", None)
    # Rows a killed run left "requeuing" are selected too; claim() takes them only once stale.
    selection = dataclasses.replace(selection, state=("dead", "requeuing"))
    for batch in store.iter_batches(selection, batch_size, url):
        rows = store.claim([row.id for row in batch], token, url)
        messages: list[Message[Any]] = []
        sendable: list[DeadLetter] = []
        for row in rows:
            try:
                messages.append(_message(row, token, settings))
                sendable.append(row)
            except (CallboardError, SealError, ValueError) as error:
                result.skipped[row.id] = str(error)
        store.release([row.id for row in rows if row.id in result.skipped], url)
        try:
            for name in {message.queue_name for message in messages}:
                broker.declare_queue(name)
            if enqueue_many is not None:
                enqueue_many(messages)
            else:
                for message in messages:
                    broker.enqueue(message)
        except Exception:
            store.release([row.id for row in sendable], url)
            raise
        sent = {row.id: message.message_id for row, message in zip(sendable, messages, strict=True)}
        store.finish_requeue(sendable, sent, url)
        result.count += len(sent)
        if keep_ids:
            result.sent.update(sent)
        if on_batch is not None:
            on_batch(result.count)
    return result
