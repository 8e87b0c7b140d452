"""Fixtures for every tier: real Redis, PostgreSQL and RabbitMQ when CALLBOARD_TEST_* URLs are
set (CI), an embedded Redis and SQLite otherwise (a laptop).

Isolation: each run claims a free Redis database (never FLUSHALL), a PostgreSQL schema of its
own, and queue names with a run prefix on RabbitMQ. A fixture that cannot get its service skips
with the reason, and fails instead under CALLBOARD_TEST_REQUIRE_ALL=1.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from dramatiq import Broker

from config.settings import get_settings
from service.brokers.embedded import EmbeddedRedis

REQUIRE_ALL = os.environ.get("CALLBOARD_TEST_REQUIRE_ALL") == "1"
RUN_ID = uuid.uuid4().hex[:8]
QUEUE_PREFIX = f"t{RUN_ID}"
CLAIM_KEY = "callboard:test-run-claim"

# Test actors read these at import, in this process and in the workers we start.
os.environ.setdefault("CALLBOARD_TEST_QUEUE_PREFIX", QUEUE_PREFIX)


def unavailable(reason: str) -> None:
    """Skip (laptop) or fail (CI, CALLBOARD_TEST_REQUIRE_ALL=1) for a missing service or tool."""
    if REQUIRE_ALL:
        pytest.fail(f"required by CALLBOARD_TEST_REQUIRE_ALL=1: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CALLBOARD_TEST_REQUIRE_ALL=1 (CI) a skipped test is a failed test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRE_ALL and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CALLBOARD_TEST_REQUIRE_ALL=1: {report.longrepr}"


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests read settings from an environment of their own making."""
    for key in list(os.environ):
        if key.startswith("CALLBOARD_") and not key.startswith("CALLBOARD_TEST_"):
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server URL without a database: CALLBOARD_TEST_REDIS_URL, or an embedded server."""
    url = os.environ.get("CALLBOARD_TEST_REDIS_URL")
    if url:
        yield url.rstrip("/")
        return
    with socket.socket() as probe:  # a free port, so fault tests can proxy it over TCP
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), tcp_port=port) as server:
        yield server.url


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return urlunsplit(parts._replace(query=f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_db_url(redis_server_url: str) -> Iterator[str]:
    """The URL of a Redis database claimed by this run (empty when claimed, flushed when done)."""
    for db in range(1, 16):
        url = _with_db(redis_server_url, db)
        client = redis.Redis.from_url(url)
        try:
            claimed = client.set(CLAIM_KEY, RUN_ID, nx=True, ex=3600) and client.dbsize() == 1
        except redis.ConnectionError as error:
            unavailable(f"Redis at {redis_server_url} unreachable: {error}")
        if claimed:
            try:
                yield url
            finally:
                client.flushdb()
            return
        if client.get(CLAIM_KEY) == RUN_ID.encode():
            client.delete(CLAIM_KEY)
    unavailable("no free Redis database (1-15) to claim")


@pytest.fixture
def redis_url(redis_db_url: str) -> Iterator[str]:
    """The run's Redis database, emptied before each test (only this run's database)."""
    client = redis.Redis.from_url(redis_db_url)
    client.flushdb()
    client.set(CLAIM_KEY, RUN_ID, ex=3600)
    yield redis_db_url


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    """A client of the run's Redis database."""
    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def amqp_server_url() -> str:
    """CALLBOARD_TEST_AMQP_URL, checked reachable; skips (or fails in CI) otherwise."""
    url = os.environ.get("CALLBOARD_TEST_AMQP_URL")
    if not url:
        unavailable("CALLBOARD_TEST_AMQP_URL is not set (no RabbitMQ)")
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except Exception as error:
        unavailable(f"RabbitMQ at {url} unreachable: {error}")
    return url


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """Each broker in turn: the run's Redis database, then RabbitMQ (queues carry the run prefix)."""
    if request.param == "redis":
        yield redis_url
        return
    url = request.getfixturevalue("amqp_server_url")
    yield url
    delete_test_queues(url)


def delete_test_queues(url: str, queue: str | None = None) -> None:
    """Delete ``queue`` (default: the test actors' queue) and its delay and dead-letter queues."""
    import pika

    from tests.support.actors import QUEUE

    queue = queue or QUEUE
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)
    connection.close()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A database of this test's own: a PostgreSQL schema (CALLBOARD_TEST_DATABASE_URL) or SQLite."""
    base = os.environ.get("CALLBOARD_TEST_DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'callboard.db'}"
        return
    import sqlalchemy

    schema = f"cb_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    except sqlalchemy.exc.OperationalError as error:
        unavailable(f"PostgreSQL at {base} unreachable: {error}")
    separator = "&" if "?" in base else "?"
    yield f"{base}{separator}options=-csearch_path%3D{schema}"
    from service.db.engine import dispose_engines

    dispose_engines()
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """The test's database, migrated to the newest revision."""
    from service.db.migrate import upgrade

    upgrade(database_url)
    return database_url


@pytest.fixture
def worker_env(redis_url: str, migrated_database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a worker child process running the test actors on the run's Redis."""
    return {
        "CALLBOARD_BROKER_URL": redis_url,
        "CALLBOARD_DATABASE_URL": migrated_database_url,
        "CALLBOARD_SECRET_KEY": "test-secret",
        "CALLBOARD_DLQ_DRAIN_INTERVAL": "0.5",
        "CALLBOARD_DATA_DIR": str(tmp_path / "var"),
        "CALLBOARD_ACTOR_MODULES": "tests.support.actors",
        "CALLBOARD_WORKER_PROCESSES": "1",
        "CALLBOARD_WORKER_THREADS": "4",
        "CALLBOARD_LOG_FORMAT": "json",
        "CALLBOARD_TEST_RECORD_URL": redis_url,
        "CALLBOARD_TEST_QUEUE_PREFIX": QUEUE_PREFIX,
        # Off unless a test asks for it (with a free port): parallel runs must not share 9191.
        "CALLBOARD_METRICS_PORT": "0",
        "CALLBOARD_METRICS_HOST": "127.0.0.1",
    }


@pytest.fixture
def producer(
    broker_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    """This process as a producer on ``broker_url``: a Callboard broker with the test actors."""
    from tests.support.producer import producing_on

    with producing_on(broker_url, redis_url, tmp_path / "var", monkeypatch) as broker:
        yield broker


@pytest.fixture
def redis_producer(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """This process as a producer on the run's Redis only (for tests that are not about brokers)."""
    from tests.support.producer import producing_on

    with producing_on(redis_url, redis_url, tmp_path / "var", monkeypatch) as broker:
        yield broker


@pytest.fixture
def operator_env(
    worker_env: dict[str, str], broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """This process configured like the workers (database, secret key, broker): an operator."""
    return configure_process({**worker_env, "CALLBOARD_BROKER_URL": broker_url}, monkeypatch)


def configure_process(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set ``env`` in this process's environment for the test and re-read settings; returns it."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return env
