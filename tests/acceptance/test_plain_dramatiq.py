"""Modules written for plain Dramatiq load and run under Callboard's stack, pipelines and
callbacks included."""

from __future__ import annotations

import dramatiq
from dramatiq import Broker

from tests.integration.conftest import StartWorker
from tests.support.producer import adopt_actors
from tests.support.records import entries
from tests.support.waiting import wait_until


def test_plain_dramatiq_actors_run_with_pipelines_and_callbacks(
    producer: Broker, start_worker: StartWorker
) -> None:
    import tests.support.plain_actors as plain

    adopt_actors(plain, producer)
    start_worker(CALLBOARD_ACTOR_MODULES="tests.support.actors,tests.support.plain_actors")
    dramatiq.pipeline([plain.plain_first.message("piped"), plain.plain_second.message()]).run()
    plain.plain_first.send_with_options(args=("called",), on_success=plain.plain_succeeded)
    wait_until(lambda: entries("piped", "second"), timeout=30, message="the pipeline's second step")
    wait_until(lambda: entries("called", "callback"), timeout=30, message="the on_success callback")
