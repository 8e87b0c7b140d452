"""``status(message_id)``: a message's record, its group's counts and its stored result.

One pipelined round trip reads the record and, for an id that is a group's
(:func:`service.workflows.group`), the group's counts; a record in a group adds its group's
counts; a finished message of a ``store_results`` actor adds its (redacted) result.
"""

from __future__ import annotations

import json
import types
from typing import Any

import redis
from dramatiq import Broker
from dramatiq.results import ResultFailure, ResultMissing

from config.settings import get_settings
from service.errors import BadInputError, StatusUnavailableError
from service.runtime import get_broker
from service.state import state_client
from service.status.records import MAX_ID_LENGTH, TERMINAL_STATES, group_key, key, readable


def status(message_id: str, *, broker: Broker | None = None) -> dict[str, Any] | None:
    """The status of ``message_id`` (or of a group id), or ``None`` when nothing is known of it:
    never sent, or its record expired ``CALLBOARD_STATUS_TTL`` after its last change.

    The result has ``message_id``, ``state`` (one of :data:`service.status.STATES`), and as known
    ``actor``, ``queue``, ``attempts``, ``updated_at``, ``eta``, ``reason``, ``error`` (redacted),
    ``progress`` (``current``, ``total``, ``note``), ``group`` (``id``, ``done``, ``failed``,
    ``total``) and ``result`` (the redacted stored result of a ``store_results`` actor). A group
    id gives ``state`` ``running``, ``succeeded`` or ``failed`` and ``group``.

    Raises :class:`BadInputError` for an id that cannot be one, :class:`StatusUnavailableError`
    when there is no state Redis or it cannot be reached.
    """
    if not message_id or len(message_id) > MAX_ID_LENGTH or not message_id.isprintable() or " " in message_id:
        raise BadInputError(f"not a message id: {message_id[:MAX_ID_LENGTH]!r}")
    broker = broker or get_broker()
    client = state_client(broker, get_settings())
    if client is None:
        raise StatusUnavailableError(
            "status needs a state Redis: set CALLBOARD_REDIS_URL (the broker is not Redis)"
        )
    try:
        return _lookup(broker, client, message_id)
    except (redis.RedisError, OSError) as error:
        raise StatusUnavailableError(f"state Redis unreachable: {type(error).__name__}: {error}") from None


def _lookup(broker: Broker, client: redis.Redis, message_id: str) -> dict[str, Any] | None:
    pipe = client.pipeline(transaction=False)
    pipe.get(key(message_id))
    pipe.hgetall(group_key(message_id))
    raw, own_group = pipe.execute()
    if raw is None:
        return _group_status(message_id, own_group) if own_group else None
    record: dict[str, Any] = readable(json.loads(raw))
    group_id = record.pop("group_id", None)
    if group_id:
        record["group"] = _group(group_id, client.hgetall(group_key(group_id)))
    if record["state"] in TERMINAL_STATES:
        result = _result(broker, record)
        if result is not None:
            record["result"] = result
    return record


def _group(group_id: str, counts: dict[Any, Any]) -> dict[str, Any]:
    values = {_text(name): int(value) for name, value in counts.items()}
    return {
        "id": group_id,
        "done": values.get("done", 0),
        "failed": values.get("failed", 0),
        "total": values.get("total"),
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _group_status(group_id: str, counts: dict[Any, Any]) -> dict[str, Any]:
    group = _group(group_id, counts)
    finished = group["done"] + group["failed"]
    state = "running"
    if group["total"] is not None and finished >= group["total"]:
        state = "failed" if group["failed"] else "succeeded"
    return {"message_id": group_id, "state": state, "group": group}


def _result(broker: Broker, record: dict[str, Any]) -> Any:
    """The stored (already redacted) result of a finished message, or ``None``."""
    try:
        backend = broker.get_results_backend()
    except Exception:  # no Results middleware, or no backend attached
        return None
    if backend is None:
        return None
    stand_in = types.SimpleNamespace(
        queue_name=record.get("queue"), actor_name=record.get("actor"), message_id=record["message_id"]
    )
    try:
        return {"value": backend.get_result(stand_in)}
    except ResultMissing:
        return None
    except ResultFailure as failure:
        return {"error": f"{failure.orig_exc_type}: {failure.orig_exc_msg}"}
