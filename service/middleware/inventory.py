"""Inventory: which function declared each actor name, so a name declared twice is caught.

Dramatiq keeps one actor per name and a second declaration silently replaces the first (two
modules with a ``send_email``: one of them never runs). This middleware remembers every function
declared under each name; ``callboard actors`` flags names declared by two different functions.
Re-declaring the same function (a module imported twice, a test adopting actors) is not a clash.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Middleware


def origin(fn: Any) -> str:
    """``module:qualname`` of an actor's function (the coroutine function of an async actor)."""
    fn = getattr(fn, "__wrapped__", fn)
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


class ActorInventory(Middleware):
    """Record the origin of every actor declaration on this broker."""

    def __init__(self) -> None:
        self.declared: dict[str, list[str]] = {}

    def after_declare_actor(self, broker: Broker, actor: Any) -> None:
        origins = self.declared.setdefault(actor.actor_name, [])
        where = origin(actor.fn)
        if where not in origins:
            origins.append(where)

    def clashes(self) -> dict[str, list[str]]:
        """Actor names declared by more than one function, with their origins."""
        return {name: list(origins) for name, origins in self.declared.items() if len(origins) > 1}
