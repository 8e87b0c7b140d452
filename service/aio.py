"""Async actors on the worker's event loop, and ``run_sync`` for sync code that must call async code.

A worker runs one event loop in a thread of its own (Dramatiq's ``AsyncIO`` middleware, in the
stack). An ``async def`` actor declared with :func:`service.actor` runs there: the worker thread
that took the message submits the coroutine and waits for it, so every middleware hook runs on
that thread as for a sync actor, and time limits apply.

Time limits: the worker thread waits in a loop that any exception raised into it ends (the soft
or hard limit, a shutdown): the coroutine is then cancelled (it sees ``CancelledError`` at its
next ``await``, and may clean up in ``finally``), given up to :data:`CANCEL_GRACE` seconds to
finish, and the limit's exception is raised from the actor as for a sync one. Dramatiq's own
wrapper cancels only on its ``Interrupt`` (the hard limit), so a soft limit would leave the
coroutine running after its message had failed.

``run_sync(coro)`` never nests event loops: called from a thread whose loop is running it raises
(await the coroutine instead); from a worker thread it runs the coroutine on the worker's loop;
elsewhere it runs it with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from dramatiq.asyncio import get_event_loop_thread

from service.status import running

T = TypeVar("T")

#: Seconds a cancelled coroutine may take to finish its cleanup before the worker moves on.
CANCEL_GRACE = 1.0

#: Seconds between checks of the waiting thread (how soon it notices it was interrupted).
_WAIT_STEP = 0.1


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code and return its result (or raise its error).

    Raises ``RuntimeError`` when called from a thread whose event loop is running (a coroutine
    must ``await`` instead: blocking there would freeze every coroutine on that loop).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError("run_sync() called from async code: await the coroutine instead")
    loop_thread = get_event_loop_thread()
    if loop_thread is not None and loop_thread.loop.is_running():
        return _run_on(loop_thread.loop, coro)
    return asyncio.run(coro)


def sync_actor_fn(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """A sync function that runs the coroutine function ``fn`` as described above (for ``@actor``)."""

    @functools.wraps(fn)
    def run_async_actor(*args: Any, **kwargs: Any) -> T:
        return run_sync(_with_status(fn(*args, **kwargs), running.running_message()))

    # A plain function to Dramatiq (it would wrap a coroutine function its own way); its
    # ``__wrapped__`` keeps ``fn``'s signature for argument checks and ``callboard actors``.
    return run_async_actor


def is_async(fn: Any) -> bool:
    """Whether ``fn`` is an ``async def`` function."""
    return inspect.iscoroutinefunction(fn)


async def _with_status(coro: Coroutine[Any, Any, T], state: tuple[Any, running.Tracker] | None) -> T:
    # The task runs in a context of its own: carry the message's status in, for progress().
    running.enter(state)
    return await coro


def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    finished = threading.Event()

    async def tracked() -> T:
        try:
            return await coro
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(tracked(), loop)
    try:
        while True:
            try:
                return future.result(timeout=_WAIT_STEP)
            except concurrent.futures.TimeoutError:
                if future.done():  # the coroutine itself raised TimeoutError
                    return future.result(timeout=0)
    except BaseException:
        # Raised into this thread (a time limit, a shutdown) or by the coroutine: stop it either way.
        if not future.done():
            loop.call_soon_threadsafe(future.cancel)
            finished.wait(CANCEL_GRACE)
        raise
