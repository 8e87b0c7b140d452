"""Idempotency keys: which key a message claims, derived in one place for the worker and senders.

A message's key is its ``idempotency_key`` option when given, else a digest of its actor's name
and the canonical JSON of its arguments (sorted keys, no whitespace), so the same call twice has
the same key. Scope ``user`` / ``tenant`` namespaces the key by the message's ``user_id`` /
``tenant_id`` option, so two users' identical calls do not collide; such a message without that
option is refused (:func:`scope_problem`). Keys are per actor: the same ``idempotency_key`` sent
to two actors is two keys. What is stored is a SHA-256 digest, so keys have a fixed length and
carry no user data into Redis or the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

Scope = Literal["global", "user", "tenant"]
Store = Literal["redis", "database"]

SCOPES: tuple[Scope, ...] = ("global", "user", "tenant")
STORES: tuple[Store, ...] = ("redis", "database")

#: The message option each scope namespaces its keys by.
SCOPE_OPTIONS: dict[str, str] = {"user": "user_id", "tenant": "tenant_id"}


#: The version of :func:`message_key`'s derivation: change it with the derivation, so that a
#: worker never trusts a digest that a producer of another version wrote (:func:`derivation`).
KEY_VERSION = "k1"

# Sorted keys, no whitespace; built once (json.dumps builds an encoder per call with these options).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def scope_problem(scope: str | None, options: dict[str, Any]) -> str | None:
    """Why a message with ``options`` cannot be claimed under ``scope``, or None if it can."""
    name = SCOPE_OPTIONS.get(scope or "global")
    if name is not None and options.get(name) is None:
        return f"idempotency scope {scope!r} needs the message option {name!r}"
    return None


def derivation(scope: str | None) -> str:
    """What, besides the message itself, decides the key :func:`message_key` derives for it:
    the derivation's version and the actor's scope (``k1.global``). A producer writes it beside
    the digest, and a worker whose actor agrees uses the digest without deriving it again."""
    return f"{KEY_VERSION}.{scope or 'global'}"


def message_key(
    actor_name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    scope: str | None,
) -> str:
    """The digest a message claims (64 hex characters).

    Raises ``ValueError`` with :func:`scope_problem`'s line when the scope's option is missing.
    """
    scope = scope or "global"
    problem = scope_problem(scope, options)
    if problem is not None:
        raise ValueError(problem)
    given = options.get("idempotency_key")
    name = SCOPE_OPTIONS.get(scope)
    namespace = "" if name is None else str(options[name])
    # One JSON array, so no two (actor, scope, namespace, key or arguments) share a text.
    if given is None:
        material: list[Any] = [actor_name, scope, namespace, "args", list(args), kwargs]
    else:
        material = [actor_name, scope, namespace, "key", str(given)]
    return hashlib.sha256(_CANONICAL.encode(material).encode()).hexdigest()
