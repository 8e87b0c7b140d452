"""Hooks other capabilities subscribe to (metrics count dead letters and expired messages).

Callbacks run in the process that observed the event and must be quick; an exception in one is
logged and does not stop the others or the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

DeadLettered = Callable[[str, str | None, str], None]  # queue, actor, reason
Expired = Callable[[str, str], None]  # queue, actor

_dead_lettered: list[DeadLettered] = []
_expired: list[Expired] = []


def on_dead_lettered(callback: DeadLettered) -> DeadLettered:
    """Call ``callback(queue, actor, reason)`` once for each dead letter newly stored."""
    _dead_lettered.append(callback)
    return callback


def on_expired(callback: Expired) -> Expired:
    """Call ``callback(queue, actor)`` for each message skipped because it expired."""
    _expired.append(callback)
    return callback


def _emit(callbacks: list[Any], *args: Any) -> None:
    for callback in callbacks:
        try:
            callback(*args)
        except Exception:
            logger.exception("dead-letter hook %r failed", callback)


def emit_dead_lettered(queue: str, actor: str | None, reason: str) -> None:
    """Tell subscribers a dead letter was stored."""
    _emit(_dead_lettered, queue, actor, reason)


def emit_expired(queue: str, actor: str) -> None:
    """Tell subscribers a message expired."""
    _emit(_expired, queue, actor)
