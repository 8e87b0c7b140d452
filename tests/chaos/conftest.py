"""Chaos fixtures: the completions ledger in the test's database, workers that run the chaos
actors, and this process as a producer of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq import Broker

from tests.integration.conftest import start_worker
from tests.support import completions

__all__ = ["start_worker"]


@pytest.fixture
def ledger_url(database_url: str) -> Iterator[str]:
    """The test's database with the completions table, for actors and checks alike."""
    completions.create(database_url)
    yield database_url
    completions.dispose()


@pytest.fixture
def worker_env(worker_env: dict[str, str], ledger_url: str) -> dict[str, str]:
    """The suite's ``worker_env`` plus the chaos actors and the ledger's URL."""
    return {
        **worker_env,
        "CALLBOARD_ACTOR_MODULES": "tests.support.actors,tests.support.chaos_actors",
        completions.URL_VARIABLE: ledger_url,
    }


@pytest.fixture
def chaos_producer(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """This process as a producer on the run's Redis, with the chaos actors declared."""
    from tests.support import chaos_actors
    from tests.support.producer import adopt_actors, producing_on

    with producing_on(redis_url, redis_url, tmp_path / "var", monkeypatch) as broker:
        adopt_actors(chaos_actors, broker)
        yield broker
