"""Sending messages by actor name: ``send`` and the pipelined ``send_many``.

Both validate before anything reaches the broker: the actor must exist, the arguments must fit
its signature and encode as JSON, nested at most :data:`service.intake.MAX_NESTING` levels, the
encoded message must fit ``CALLBOARD_MAX_MESSAGE_BYTES``, options that middleware reads must
have their types (:func:`service.intake.option_problem`), and a ``queue`` override must not be
served sooner than the actor's own queue (:func:`service.intake.queue_problem`). Both put a
``request_id`` in the message options (the caller's, else the one of the message running on this
thread, so a chain of actors shares one id, else a new one) so logs can follow one request across
actors.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import pika.exceptions
import redis
from dramatiq import Actor, Broker, Message
from dramatiq.errors import ActorNotFound, BrokerConnectionError

from config.queues import QUEUES
from config.settings import get_settings
from service import intake
from service.errors import BadArgumentsError, BadInputError, BrokerUnavailableError, UnknownActorError
from service.idempotency.keys import scope_problem
from service.logs import log_event, message_context
from service.middleware.validation import MessageTooLargeError
from service.runtime import get_broker, load_actors

logger = logging.getLogger(__name__)

#: Messages per pipelined round trip in :func:`send_many`.
BATCH_SIZE = 1000

#: Broker answers that no retry changes: wrong credentials.
_REFUSALS = (
    redis.AuthenticationError,
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
    pika.exceptions.AuthenticationError,
)

#: First and longest pause between attempts while the broker is unreachable.
RETRY_PAUSE = (0.1, 1.0)


def find_actor(actor_name: str) -> Actor[Any, Any]:
    """The registered actor called ``actor_name``; raises :class:`UnknownActorError`."""
    broker = get_broker()
    try:
        return broker.get_actor(actor_name)
    except ActorNotFound:
        load_actors()
        try:
            return broker.get_actor(actor_name)
        except ActorNotFound:
            known = ", ".join(sorted(broker.get_declared_actors())) or "none"
            raise UnknownActorError(f"unknown actor {actor_name!r} (known: {known})") from None


@lru_cache(maxsize=1024)
def _signature(fn: Any) -> inspect.Signature:
    return inspect.signature(fn)


def check_arguments(actor: Actor[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Raise :class:`BadArgumentsError` unless ``args``/``kwargs`` fit ``actor``'s signature."""
    try:
        _signature(actor.fn).bind(*args, **kwargs)
    except TypeError as error:
        raise BadArgumentsError(f"{actor.actor_name}: {error}") from None


def build_message(
    actor: Actor[Any, Any],
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    request_id: str | None = None,
    options: dict[str, Any] | None = None,
) -> Message[Any]:
    """A validated message for ``actor``.

    Raises :class:`BadArgumentsError` if the arguments do not fit, do not encode as JSON or are
    nested too deeply, :class:`MessageTooLargeError` if the encoded message is over
    ``CALLBOARD_MAX_MESSAGE_BYTES``, and :class:`BadInputError` if an option has the wrong type
    or ``queue`` is served sooner than the actor's queue: a worker would dead-letter each of
    them (``oversized``, ``bad_options``, ``wrong_queue``).
    """
    kwargs = kwargs or {}
    check_arguments(actor, args, kwargs)
    message = actor.message_with_options(
        args=tuple(args), kwargs=kwargs, request_id=request_id or uuid.uuid4().hex, **(options or {})
    )
    problem = intake.option_problem(message.options) or scope_problem(
        message.options.get("idempotency_scope") or actor.options.get("idempotency_scope"), message.options
    )
    if problem is not None:
        raise BadInputError(f"{actor.actor_name}: {problem}")
    if queue and queue != message.queue_name:
        problem = intake.queue_problem(actor.actor_name, actor.queue_name, queue)
        if problem is not None:
            raise BadInputError(problem)
        message = message.copy(queue_name=queue)
    # Checked before encoding: the encoder recurses, and a worker refuses deeper bodies anyway.
    if intake.nested_deeper_than(message.asdict(), intake.MAX_NESTING):
        raise BadArgumentsError(
            f"{actor.actor_name}: arguments nested deeper than {intake.MAX_NESTING} levels"
        )
    try:
        size = len(message.encode())
    except (TypeError, ValueError) as error:
        raise BadArgumentsError(f"{actor.actor_name}: arguments are not JSON: {error}") from None
    limit = get_settings().max_message_bytes
    if size > limit:
        raise MessageTooLargeError.of(actor.actor_name, size, limit)
    return message


def _declare(queue: str | None) -> None:
    if queue and queue not in QUEUES:
        # A queue outside the catalogue is allowed (plain Dramatiq users have their own), but it
        # must be declared for workers started with --queues to consume it.
        get_broker().declare_queue(queue)


def send(
    actor_name: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    delay: float | None = None,
    request_id: str | None = None,
    send_timeout: float | None = None,
    idempotency_key: str | None = None,
    **options: Any,
) -> str:
    """Enqueue one message for ``actor_name``; returns its message id once the broker has it.

    ``delay`` is in seconds. With ``idempotency_key``, at most one message of this actor with
    that key (within its scope) succeeds per TTL; others are acked without running. Raises
    :class:`UnknownActorError`, :class:`BadArgumentsError`, :class:`BadInputError` (too large, a
    bad option, or a queue the actor may not use; see :func:`build_message`), or
    :class:`BrokerUnavailableError` (the message was not stored: the broker stayed unreachable for
    ``send_timeout`` seconds of retries, by default ``CALLBOARD_SEND_TIMEOUT``; 0 fails at the
    first error).
    """
    keys = None if idempotency_key is None else [idempotency_key]
    return send_many(
        actor_name,
        [args],
        [kwargs or {}],
        queue=queue,
        delay=delay,
        request_id=request_id,
        send_timeout=send_timeout,
        idempotency_keys=keys,
        **options,
    )[0]


def send_many(
    actor_name: str,
    args_list: Iterable[Sequence[Any]],
    kwargs_list: Iterable[dict[str, Any]] | None = None,
    *,
    queue: str | None = None,
    delay: float | None = None,
    request_id: str | None = None,
    idempotency_keys: Iterable[str | None] | None = None,
    batch_size: int = BATCH_SIZE,
    send_timeout: float | None = None,
    **options: Any,
) -> list[str]:
    """Enqueue one message per item of ``args_list`` (with the matching ``kwargs_list`` item) in
    pipelined batches of ``batch_size``; returns the message ids in order.

    ``idempotency_keys`` gives each message its ``idempotency_key`` option (``None`` for none);
    an ``idempotency_key`` in ``options`` would give every message the same key.

    Every message is validated before the first batch is sent. On Redis each batch is one round
    trip; on RabbitMQ messages are published one by one with confirms. An unreachable broker is
    retried for ``send_timeout`` seconds (default ``CALLBOARD_SEND_TIMEOUT``) per batch.
    """
    actor = find_actor(actor_name)
    args_items = list(args_list)
    kwargs_items = list(kwargs_list) if kwargs_list is not None else [{}] * len(args_items)
    if len(kwargs_items) != len(args_items):
        raise BadArgumentsError(f"{actor_name}: {len(args_items)} args but {len(kwargs_items)} kwargs")
    request_id = request_id or (message_context() or {}).get("request_id") or uuid.uuid4().hex
    key_items = list(idempotency_keys) if idempotency_keys is not None else [None] * len(args_items)
    if len(key_items) != len(args_items):
        raise BadArgumentsError(f"{actor_name}: {len(args_items)} args but {len(key_items)} idempotency keys")
    messages = [
        build_message(
            actor,
            args,
            kwargs,
            queue=queue,
            request_id=request_id,
            options=options if key is None else {**options, "idempotency_key": key},
        )
        for args, kwargs, key in zip(args_items, kwargs_items, key_items, strict=True)
    ]
    _declare(queue)
    broker = get_broker()
    delay_ms = None if delay is None else int(delay * 1000)
    ids: list[str] = []
    for start in range(0, len(messages), batch_size):
        batch = messages[start : start + batch_size]
        sent = _enqueue_batch(broker, batch, delay_ms, (len(ids), len(messages)), send_timeout)
        ids.extend(message.message_id for message in sent)
    return ids


def _enqueue_batch(
    broker: Broker,
    batch: list[Message],
    delay_ms: int | None,
    progress: tuple[int, int],
    send_timeout: float | None,
) -> list[Message]:
    """Enqueue ``batch``, retrying an unreachable broker for up to ``send_timeout`` seconds
    (default ``CALLBOARD_SEND_TIMEOUT``); ``progress``: messages sent before it, and in all.
    Raises :class:`BrokerUnavailableError` when that runs out (the batch was not stored).

    A retry after a connection that failed mid-reply may store a message twice (at-least-once;
    an idempotency key collapses the copies); it never reports a message stored that was not.
    """
    enqueue_many = getattr(broker, "enqueue_many", None)
    done, total = progress
    timeout = get_settings().send_timeout if send_timeout is None else send_timeout
    deadline = time.monotonic() + timeout
    pause = RETRY_PAUSE[0]
    while True:
        try:
            if enqueue_many is not None:
                sent: list[Message] = enqueue_many(batch, delay=delay_ms)
                return sent
            return [broker.enqueue(message, delay=delay_ms) for message in batch]
        except (BrokerConnectionError, redis.RedisError, OSError) as error:
            if not _transient(error) or time.monotonic() + pause > deadline:
                raise BrokerUnavailableError(
                    f"broker unavailable ({done} of {total} messages sent, the rest not): "
                    f"{type(error).__name__}: {error}"
                ) from None
            log_event(
                logger, logging.WARNING, "send.retrying", error=f"{type(error).__name__}: {error}"[:300]
            )
            time.sleep(pause)
            pause = min(pause * 2, RETRY_PAUSE[1])


def _transient(error: BaseException) -> bool:
    """Whether trying again may help: a lost or refused connection or a timeout, not a refusal
    such as a wrong password or a command error."""
    cause = (error.__cause__ or error.__context__) if isinstance(error, BrokerConnectionError) else error
    if isinstance(cause, _REFUSALS):
        return False
    return isinstance(error, (BrokerConnectionError, redis.ConnectionError, redis.TimeoutError, OSError))
