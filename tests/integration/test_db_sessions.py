"""``service.db.session()``, the actors' database API, against a real PostgreSQL: it commits,
rolls back and always closes, and 1,000 actor runs in a real worker leave no connection open
beyond the pool's bound (counted by the server, in ``pg_stat_activity``), and none at all once the
worker stops."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy
from dramatiq import Broker
from sqlalchemy import text

from service import send_many
from service.db import get_engine, session
from service.deadletters import store as dead_letters
from tests.conftest import configure_process, unavailable
from tests.integration.conftest import StartWorker
from tests.support import status_actors
from tests.support.producer import adopt_actors
from tests.support.records import client
from tests.support.waiting import wait_until

MODULES = "tests.support.actors,tests.support.status_actors"

#: The engine's pool bound per process (``pool_size`` + ``max_overflow`` in service/db/engine.py).
POOL_BOUND = 10


def _postgres(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        unavailable("needs PostgreSQL (CALLBOARD_TEST_DATABASE_URL)")
    return database_url


def connections(application_name: str) -> dict[str, int]:
    """The server's connections opened under ``application_name``, by state."""
    admin = sqlalchemy.create_engine(os.environ["CALLBOARD_TEST_DATABASE_URL"], poolclass=sqlalchemy.NullPool)
    try:
        with admin.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
                    "WHERE application_name = :name GROUP BY 1"
                ),
                {"name": application_name},
            ).all()
    finally:
        admin.dispose()
    return {str(state): int(count) for state, count in rows}


def test_a_session_commits_rolls_back_and_always_closes(migrated_database_url: str) -> None:
    url = _postgres(migrated_database_url)
    engine = get_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE session_probe (n integer)"))
    with session(url) as db:
        db.execute(text("INSERT INTO session_probe VALUES (1)"))
    with pytest.raises(RuntimeError), session(url) as db:
        db.execute(text("INSERT INTO session_probe VALUES (2)"))
        raise RuntimeError("rolled back")
    with session(url) as db:
        assert db.execute(text("SELECT n FROM session_probe")).scalars().all() == [1]
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_thousand_actor_runs_leave_no_open_connections(
    worker_env: dict[str, str],
    redis_producer: Broker,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = _postgres(worker_env["CALLBOARD_DATABASE_URL"])
    name = f"cb-sessions-{uuid.uuid4().hex[:8]}"
    tagged = f"{url}&application_name={name}"
    adopt_actors(status_actors, redis_producer)
    configure_process({**worker_env, "CALLBOARD_ACTOR_MODULES": MODULES}, monkeypatch)
    worker = start_worker(CALLBOARD_ACTOR_MODULES=MODULES, CALLBOARD_DATABASE_URL=tagged)
    # When 1,000 messages each use a session, 50 of them failing inside it (rolled back)
    send_many("td_query", [["leak", n % 20 == 0] for n in range(1000)])
    wait_until(lambda: int(client().get("queries:leak") or 0) == 950, timeout=120, message="950 queries")
    wait_until(lambda: dead_letters.count_dead() == 50, timeout=60, message="50 dead letters")
    # Then the worker holds at most its pool, none of it checked out in a transaction
    held = connections(name)
    assert 0 < sum(held.values()) <= POOL_BOUND, held
    assert set(held) <= {"idle"}, held
    # And once it stops, nothing at all
    worker.stop()
    wait_until(lambda: not connections(name), timeout=30, message="the worker's connections to close")
