"""A module written for plain Dramatiq (``@dramatiq.actor``), as users migrating bring them."""

from __future__ import annotations

import dramatiq

from tests.support.actors import QUEUE
from tests.support.records import record


@dramatiq.actor(queue_name=QUEUE)
def plain_first(tag: str) -> str:
    """First step of a pipeline: its result is the next step's argument."""
    record(tag, "first")
    return tag


@dramatiq.actor(queue_name=QUEUE)
def plain_second(tag: str) -> None:
    """Second step of a pipeline."""
    record(tag, "second")


@dramatiq.actor(queue_name=QUEUE)
def plain_succeeded(message: dict[str, object], result: object) -> None:
    """``on_success`` callback."""
    record(str(result), "callback")
