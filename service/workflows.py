"""Workflows: Dramatiq's ``pipeline`` and ``group`` on Callboard's stack, with group progress.

>>> from service.workflows import group, pipeline
>>> pipeline([fetch.message(url), parse.message(), store.message()]).run()      # Celery chain
>>> g = group([resize.message(n) for n in range(50)])                            # Celery group
>>> g.add_completion_callback(notify.message("done"))                            # Celery chord
>>> g.run(); status(g.group_id)["group"]      # {"id": ..., "done": 12, "failed": 0, "total": 50}

``pipeline`` is Dramatiq's (each step's return value is appended to the next step's arguments;
``pipe_ignore=True`` on a message skips that). ``group`` is Dramatiq's with one addition: its
children carry the ``callboard_group`` option, so each one that ends for good counts towards the
group's ``done`` (succeeded, or skipped as a duplicate) or ``failed`` (dead, expired), readable
with :func:`service.status.status` under :attr:`group.group_id`. Completion callbacks (Dramatiq's
``GroupCallbacks``, a barrier on the state Redis) run once, after every child has succeeded; a
child that dies leaves them waiting, as in Dramatiq (see ``docs/how-to/workflows.md``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq import Broker
from dramatiq.composition import pipeline

from config.settings import get_settings
from service.runtime import get_broker
from service.state import state_client
from service.status.records import group_key

__all__ = ["group", "pipeline"]

GROUP_OPTION = "callboard_group"


class group(dramatiq.group):  # lower case: the name users know from Dramatiq and Celery
    """Dramatiq's ``group`` whose progress is visible through ``status(group.group_id)``.

    Parameters:
      children(Iterable[Message | pipeline]): messages or pipelines (a pipeline counts once,
        when its last step ends). Nested groups are not supported.
      broker(Broker): defaults to Callboard's broker.
      group_id(str): the id to read the group's status under. Defaults to a new uuid.
    """

    def __init__(
        self, children: Iterable[Any], *, broker: Broker | None = None, group_id: str | None = None
    ) -> None:
        super().__init__(children, broker=broker or get_broker())
        self.group_id = group_id or str(uuid.uuid4())

    def run(self, *, delay: int | None = None) -> group:
        """Record the group's size, then enqueue every child (``delay`` in milliseconds)."""
        tag = {GROUP_OPTION: {"id": self.group_id}}
        tagged: list[Any] = []
        for child in self.children:
            if isinstance(child, dramatiq.group):
                raise NotImplementedError("a group inside a group: run the inner group from an actor")
            if isinstance(child, pipeline):
                steps = child.messages[:]
                steps[-1] = steps[-1].copy(options=tag)
                tagged.append(pipeline(steps, broker=child.broker))
            else:
                tagged.append(child.copy(options=tag))
        client = state_client(self.broker, get_settings())
        if client is not None:
            ttl_ms = int(get_settings().status_ttl * 1000)
            pipe = client.pipeline(transaction=False)
            pipe.hset(group_key(self.group_id), "total", len(tagged))
            pipe.pexpire(group_key(self.group_id), ttl_ms)
            pipe.execute()
        self.children = tagged
        super().run(delay=delay)
        return self
