"""Pipelines, groups with progress and completion callbacks, and async actors, on real workers
and a real Redis; async actors await a real HTTP server (pytest-httpserver on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest
import redis
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from service import run_sync, status
from service.workflows import group, pipeline
from tests.integration.conftest import StartWorker

# The status tests' fixture and helpers: the same actors, the same worker.
from tests.integration.test_status import env, start, state_becomes  # noqa: F401 - env is a fixture
from tests.support import status_actors as sa
from tests.support.actors import QUEUE
from tests.support.records import entries
from tests.support.waiting import wait_until


@pytest.mark.usefixtures("env")
def test_a_pipeline_of_three_actors_passes_results_along(start_worker: StartWorker) -> None:
    start(start_worker)
    # chain(double.s(5), add.s(3), describe.s()) in Celery's words
    steps = pipeline([sa.tw_double.message(5), sa.tw_add.message(3), sa.tw_describe.message("piped")])
    steps.run()
    assert steps.get_result(block=True, timeout=30_000) == {"value": 13}
    [final] = entries("piped", "final")
    assert final["value"] == 13
    last = state_becomes(steps.messages[-1].message_id, "succeeded")
    assert last["result"] == {"value": {"value": 13}}


@pytest.mark.usefixtures("env")
def test_a_group_of_50_completes_its_progress_is_visible_and_its_callback_runs_once(
    start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    jobs = group([sa.tw_child.message("fan", n) for n in range(50)])
    jobs.add_completion_callback(sa.tw_callback.message("fan"))
    jobs.run()
    # Before any worker runs: 0 of 50
    waiting = status(jobs.group_id)
    assert waiting is not None and waiting["state"] == "running"
    assert waiting["group"] == {"id": jobs.group_id, "done": 0, "failed": 0, "total": 50}
    start(start_worker)
    done = wait_until(
        lambda: (found := status(jobs.group_id)) and found["state"] == "succeeded" and found,
        timeout=60,
        message="the group to finish",
    )
    assert done["group"]["done"] == 50
    wait_until(lambda: entries("fan", "callback"), timeout=30, message="the callback")
    assert len(entries("fan", "child")) == 50
    # A child's status names its group
    child = status(jobs.children[0].message_id)
    assert child is not None and child["group"]["id"] == jobs.group_id
    # Every child has counted (so every callback that will be sent is sent); once the queue holds
    # nothing, queued or running, the callback has run exactly once
    queued = f"dramatiq:{QUEUE}.msgs"
    wait_until(lambda: redis_client.hlen(queued) == 0, timeout=30, message="the queue to drain")
    assert len(entries("fan", "callback")) == 1


@pytest.fixture
def http_server() -> Iterator[HTTPServer]:
    """A real HTTP server on 127.0.0.1 for the async actors."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.mark.usefixtures("env")
def test_an_async_actor_awaits_real_http_on_the_worker_loop_under_a_time_limit(
    start_worker: StartWorker, http_server: HTTPServer
) -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(10)  # slower than ta_slow's soft limit (0.5 s)
        return Response("late")

    http_server.expect_request("/fast").respond_with_data("ok")
    http_server.expect_request("/slow").respond_with_handler(slow)
    worker = start(start_worker)
    # A fast call completes: its result is stored and shown by status
    fast = sa.ta_fetch.send("fetch", http_server.url_for("/fast"))
    done = state_becomes(fast.message_id, "succeeded")
    assert done["result"] == {"value": 200} and done["progress"]["note"] == "fetching"
    # Two at once run on one event loop (the worker's), not one loop per call
    sa.ta_fetch.send("fetch", http_server.url_for("/fast"))
    sa.ta_fetch.send("fetch", http_server.url_for("/fast"))
    fetched = wait_until(lambda: len(entries("fetch", "fetched")) == 3 and entries("fetch", "fetched"))
    assert len({entry["loop"] for entry in fetched}) == 1
    # A call slower than the soft limit is cancelled inside the coroutine, and the message dies
    slow_id = sa.ta_slow.send("slow", http_server.url_for("/slow")).message_id
    dead = state_becomes(slow_id, "dead")
    release.set()
    assert "SoftTimeLimitExceeded" in dead["error"]
    assert [entry["what"] for entry in entries("slow")] == ["cancelled"]
    assert worker.events("message.time_limit")


def test_run_sync_never_nests_event_loops() -> None:
    async def where() -> int:
        await asyncio.sleep(0)
        return id(asyncio.get_running_loop())

    # Outside a worker: asyncio.run, a fresh loop each time
    assert run_sync(where())
    # Inside a running loop: refused (the caller must await)

    async def nested() -> None:
        run_sync(where())

    with pytest.raises(RuntimeError, match="await the coroutine instead"):
        asyncio.run(nested())
    # In a worker (an event loop thread is running): the coroutine runs on that loop
    loop_thread = EventLoopThread(logging.getLogger("test"))
    loop_thread.start(timeout=5)
    set_event_loop_thread(loop_thread)
    try:
        assert run_sync(where()) == id(loop_thread.loop)
    finally:
        set_event_loop_thread(None)
        loop_thread.stop()
