"""Option lookup shared by every middleware: message options, then actor options, then a default.

Actor options already carry the actor's policy (the ``@actor`` decorator writes them), so the
order is message → actor → policy → middleware default, in this one helper.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker
from dramatiq.errors import ActorNotFound


def option(broker: Broker, message: Any, name: str, default: Any = None) -> Any:
    """The value of option ``name`` for ``message``: message, then its actor, then ``default``."""
    value = message.options.get(name)
    if value is not None:
        return value
    try:
        actor = broker.get_actor(message.actor_name)
    except ActorNotFound:
        return default
    value = actor.options.get(name)
    return default if value is None else value
