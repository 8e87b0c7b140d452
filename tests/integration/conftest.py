"""Integration fixtures: a real ``callboard worker`` child process on the broker under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import CallboardProcess

StartWorker = Callable[..., CallboardProcess]


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``callboard worker`` children with ``worker_env`` plus overrides; stopped at teardown."""
    started: list[CallboardProcess] = []

    def start(*args: str, wait: bool = True, **env: str) -> CallboardProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        process = CallboardProcess("worker", *args, env={**worker_env, **env}, log_path=log)
        started.append(process)
        if wait:
            process.wait_for_event("worker.started", timeout=60)
        return process

    yield start
    for process in started:
        process.stop()
