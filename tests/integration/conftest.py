"""Integration fixtures: a real ``callboard worker`` child process on the broker under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.support.ports import free_port
from tests.support.processes import CallboardProcess

StartWorker = Callable[..., CallboardProcess]


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartWorker]:
    """Start ``callboard worker`` children with ``worker_env`` plus overrides; stopped at teardown.

    In a test parametrized over brokers, workers use the broker under test.
    """
    started: list[CallboardProcess] = []
    base = dict(worker_env)
    if "broker_url" in request.fixturenames:
        base["CALLBOARD_BROKER_URL"] = request.getfixturevalue("broker_url")

    def start(*args: str, wait: bool = True, **env: str) -> CallboardProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        process = CallboardProcess("worker", *args, env={**base, **env}, log_path=log)
        started.append(process)
        if wait:
            process.wait_for_event("worker.started", timeout=60)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    """A real HTTP server on 127.0.0.1 and a free port (webhook receivers), stopped after the test."""
    server = HTTPServer(host="127.0.0.1", port=free_port())
    server.start()
    yield server
    server.clear()
    server.stop()
