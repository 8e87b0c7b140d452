"""The ``@actor`` decorator: a Dramatiq actor that runs under a Callboard policy.

>>> @actor(policy="email", max_retries=2)
... def send_welcome(user_id: int) -> None: ...

Policy fields (``max_retries``, ``min_backoff``, ``max_backoff``, ``soft_time_limit``,
``time_limit``, ``throws``, ``retry_when``, ``idempotency_scope``, ``idempotency_ttl``,
``idempotency_store``, ``result_ttl``, ...) may be overridden per actor, in seconds as in
``config/policies.py``; any other keyword (``store_results=True``, ...) is passed to
:func:`dramatiq.actor` unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, overload

import dramatiq

from config.policies import Policy, get_policy
from config.queues import QUEUES
from service.aio import is_async, sync_actor_fn
from service.errors import ConfigurationError
from service.runtime import get_broker

F = TypeVar("F", bound=Callable[..., Any])

_POLICY_FIELDS = {f.name for f in dataclasses.fields(Policy)} - {"name", "queue", "extra"}
_SECONDS_TO_MS = ("min_backoff", "max_backoff", "soft_time_limit", "time_limit")


def policy_options(policy: Policy) -> dict[str, Any]:
    """The Dramatiq actor options that carry ``policy`` (times converted to milliseconds)."""
    options: dict[str, Any] = {"policy": policy.name, "max_retries": policy.max_retries}
    for name in _SECONDS_TO_MS:
        options[name] = int(getattr(policy, name) * 1000)
    if policy.throws:
        options["throws"] = policy.throws
    if policy.retry_when is not None:
        options["retry_when"] = policy.retry_when
    if policy.keep_expired:
        options["keep_expired"] = True
    if policy.circuit_breaker is not None:
        options["circuit_breaker"] = policy.circuit_breaker
    # Idempotency options are carried even without a scope: a message's ``idempotency_key``
    # turns keys on for any actor, and then the policy's TTL and store apply.
    options["idempotency_ttl"] = int(policy.idempotency_ttl * 1000)
    options["idempotency_store"] = policy.idempotency_store
    if policy.idempotency_scope is not None:
        options["idempotency_scope"] = policy.idempotency_scope
    if policy.result_ttl is not None:
        options["result_ttl"] = int(policy.result_ttl * 1000)
    options["track_status"] = policy.track_status
    return options


def origin(fn: Any) -> str:
    """``module:qualname`` of an actor's function (the coroutine function of an async actor)."""
    fn = getattr(fn, "__wrapped__", fn)
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def first_declaration(name: str) -> str:
    """`` (first declared by module:qualname)`` when an actor called ``name`` exists, else ``""``:
    Dramatiq refuses a second actor of a name without saying where the first one is."""
    existing = get_broker().actors.get(name)
    return f" (first declared by {origin(existing.fn)})" if existing is not None else ""


@overload
def actor(fn: F) -> dramatiq.Actor[Any, Any]: ...


@overload
def actor(
    fn: None = None,
    *,
    policy: str | Policy = ...,
    actor_name: str | None = ...,
    queue_name: str | None = ...,
    priority: int | None = ...,
    **overrides: Any,
) -> Callable[[F], dramatiq.Actor[Any, Any]]: ...


def actor(
    fn: F | None = None,
    *,
    policy: str | Policy = "default",
    actor_name: str | None = None,
    queue_name: str | None = None,
    priority: int | None = None,
    **overrides: Any,
) -> Any:
    """Declare ``fn`` as an actor under ``policy`` (a name from ``config/policies.py`` or a Policy).

    The queue is the policy's unless ``queue_name`` is given; the priority is the queue's from the
    catalogue unless given. An ``async def`` ``fn`` runs on the worker's event loop
    (:mod:`service.aio`). Raises :class:`ConfigurationError` for an unknown policy or field.
    """

    def decorate(fn: F) -> dramatiq.Actor[Any, Any]:
        try:
            base = get_policy(policy) if isinstance(policy, str) else policy
            fields = {key: overrides.pop(key) for key in list(overrides) if key in _POLICY_FIELDS}
            chosen = base.override(**fields) if fields else base
        except (KeyError, TypeError) as error:
            raise ConfigurationError(f"actor {actor_name or fn.__name__}: {error}") from None
        queue = queue_name or chosen.queue
        spec = QUEUES.get(queue)
        declare: Any = dramatiq.actor  # its overloads do not cover fn plus options
        try:
            return declare(
                sync_actor_fn(fn) if is_async(fn) else fn,
                actor_name=actor_name,
                queue_name=queue,
                priority=priority if priority is not None else (spec.priority if spec else 0),
                broker=get_broker(),
                **{**policy_options(chosen), **overrides},
            )
        except ValueError as error:  # options no middleware declares, or a name already taken
            name = actor_name or fn.__name__
            raise ConfigurationError(f"actor {name}: {error}{first_declaration(name)}") from None

    if fn is not None:
        return decorate(fn)
    return decorate
