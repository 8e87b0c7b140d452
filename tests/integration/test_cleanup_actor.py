"""cleanup_old_files through a real worker: a refused root is dead-lettered at once as
non-retryable with a one-line reason, an allowed one reports counts and bytes in its log event."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service.deadletters import store
from service.sending import send
from tests.integration.conftest import StartWorker
from tests.support.ops import ops_producer
from tests.support.waiting import wait_until


def test_cleanup_refuses_outside_roots_once_and_reports_what_it_deleted(
    worker_env: dict[str, str],
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_worker: StartWorker,
) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    for directory in (allowed, outside):
        directory.mkdir()
        (directory / "old.log").write_bytes(b"x" * 123)
        os.utime(directory / "old.log", (time.time() - 3 * 86400,) * 2)
    env = {**worker_env, "CALLBOARD_CLEANUP_ROOTS": str(allowed)}
    worker = start_worker("--queues", "maintenance", **env)
    with ops_producer(env, redis_url, tmp_path / "var", monkeypatch):
        # When a root outside CALLBOARD_CLEANUP_ROOTS is asked for
        send("cleanup_old_files", kwargs={"root": str(outside), "max_age_days": 1})
        # Then it is dead-lettered as non-retryable after one attempt, and nothing is deleted
        (dead,) = wait_until(
            lambda: store.list_dead(store.Selection(), url=env["CALLBOARD_DATABASE_URL"]),
            message="the refused cleanup in the dead-letter store",
        )
        assert (dead["actor"], dead["reason"], dead["attempts"]) == ("cleanup_old_files", "non_retryable", 1)
        assert dead["exception"].startswith("CleanupRefusedError: cleanup root")
        assert (outside / "old.log").exists()
        # When an allowed root is cleaned, its counts and bytes are logged
        send("cleanup_old_files", kwargs={"root": str(allowed), "max_age_days": 1, "pattern": "*.log"})
        (cleaned,) = worker.wait_for_event("maintenance.cleaned")
        assert (cleaned["deleted"], cleaned["bytes"], cleaned["errors"]) == (1, 123, 0)
        assert not (allowed / "old.log").exists()
