"""The scheduler benchmark's actor: a no-op, declared with Callboard's ``@actor``.

Loaded by ``callboard scheduler`` (and ``callboard schedule validate``) through
``CALLBOARD_ACTOR_MODULES=actors_scheduler``. No worker runs it: the benchmark measures the
scheduler, and the messages it sends simply wait in the broker. ``idempotent=True`` keeps
validation from warning once per entry (10 000 warnings) about a non-idempotent actor.
"""

from __future__ import annotations

from service import actor


@actor(idempotent=True)
def bench_sched_noop(n: int = 0) -> None:
    """Do nothing (the benchmark never runs a worker)."""
