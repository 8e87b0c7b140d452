"""Actors of the status, progress, workflow, async-actor and database-session tests (loaded with
CALLBOARD_ACTOR_MODULES). They record what happened in Redis (:mod:`tests.support.records`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import text

from service import actor, progress
from service.db import session
from service.status.running import running_message
from tests.support.actors import FAST, QUEUE
from tests.support.records import client, record


def _wait_for_go(tag: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not client().exists(f"go:{tag}") and time.monotonic() < deadline:
        time.sleep(0.02)


@actor(queue_name=QUEUE, max_retries=0)
def ts_ok(tag: str) -> None:
    """Record ``done``."""
    record(tag, "done")


@actor(queue_name=QUEUE, max_retries=2, **FAST)
def ts_flaky(tag: str) -> None:
    """Fail the first attempt, succeed after."""
    if client().incr(f"attempts:{tag}") == 1:
        raise ValueError("first attempt fails")
    record(tag, "done")


@actor(queue_name=QUEUE, max_retries=1, **FAST)
def ts_doomed(tag: str, password: str = "") -> None:
    """Fail every time, naming the sensitive argument in the error."""
    record(tag, "attempt")
    raise RuntimeError(f"refused with {password}")


@actor(queue_name=QUEUE, max_retries=0)
def ts_waits(tag: str) -> None:
    """Record ``running``, then wait for the test's ``go`` (no progress reported)."""
    record(tag, "running")
    _wait_for_go(tag)


@actor(queue_name=QUEUE, max_retries=0)
def ts_steps(tag: str, steps: int) -> None:
    """Report progress 1 of ``steps``, wait for the test's ``go``, then report the rest."""
    progress(1, steps, note="first step done")
    record(tag, "reported")
    _wait_for_go(tag)
    for step in range(2, steps + 1):
        progress(step, steps)


@actor(queue_name=QUEUE, max_retries=0)
def ts_flood(tag: str, calls: int) -> None:
    """Call ``progress`` ``calls`` times in a tight loop; record how many status writes the
    worker's writer sent meanwhile, and for how long the loop ran."""
    found = running_message()
    assert found is not None, "status tracking is off"
    writer = found[1].writer
    assert writer is not None
    writer.flush()
    before, started = writer.writes, time.monotonic()
    for step in range(calls):
        progress(step + 1, calls)
    elapsed = time.monotonic() - started
    writer.flush()
    record(tag, "flooded", writes=writer.writes - before, seconds=elapsed, interval=writer.interval)


@actor(queue_name=QUEUE, max_retries=0, track_status=False)
def ts_untracked(tag: str) -> None:
    """An actor with status tracking off."""
    record(tag, "done")


# -- workflows --------------------------------------------------------------------------------


@actor(queue_name=QUEUE, max_retries=0)
def tw_double(value: int) -> int:
    """Return ``2 * value``."""
    return 2 * value


@actor(queue_name=QUEUE, max_retries=0)
def tw_add(amount: int, value: int) -> int:
    """Return ``value + amount`` (``value`` is the previous step's result)."""
    return value + amount


@actor(queue_name=QUEUE, max_retries=0, store_results=True, result_ttl=60)
def tw_describe(tag: str, value: int) -> dict[str, Any]:
    """Record and return the final value of a pipeline."""
    record(tag, "final", value=value)
    return {"value": value}


@actor(queue_name=QUEUE, max_retries=0)
def tw_child(tag: str, n: int) -> None:
    """One child of a group."""
    record(tag, "child", n=n)


@actor(queue_name=QUEUE, max_retries=0)
def tw_callback(tag: str) -> None:
    """A group's completion callback."""
    record(tag, "callback")


# -- async actors -----------------------------------------------------------------------------


@actor(queue_name=QUEUE, max_retries=0, soft_time_limit=5, time_limit=10, store_results=True, result_ttl=60)
async def ta_fetch(tag: str, url: str) -> int:
    """GET ``url`` on the worker's event loop; report progress; return the status code."""
    progress(0, 1, note="fetching")
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(url)
    record(tag, "fetched", status=response.status_code, loop=id(asyncio.get_running_loop()))
    return response.status_code


@actor(queue_name=QUEUE, max_retries=0, soft_time_limit=0.5, time_limit=3)
async def ta_slow(tag: str, url: str) -> None:
    """GET ``url`` (which answers slower than the soft limit); record the cancellation."""
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await http.get(url)
        record(tag, "returned")
    except asyncio.CancelledError:
        record(tag, "cancelled")
        raise


# -- database sessions ------------------------------------------------------------------------


@actor(queue_name=QUEUE, max_retries=0)
def td_query(tag: str, fail: bool = False) -> None:
    """Run one query in ``service.db.session()``; fail inside the session when asked."""
    with session() as db:
        db.execute(text("SELECT 1"))
        if fail:
            raise RuntimeError("failing inside the session")
    client().incr(f"queries:{tag}")
