"""Can this process reach its broker and database right now? Bounded in time, cached briefly.

Each probe returns ``None`` when the component answers and a one-line reason when it does not.
A probe never raises and never takes longer than its ``timeout`` (a black-holed server would
otherwise hang the caller for the kernel's TCP timeout).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text

from service.db.engine import get_engine


def bounded(check: Callable[[], None], timeout: float) -> str | None:
    """Run ``check`` in a daemon thread; its error, ``"timed out after Ns"``, or ``None``."""
    outcome: list[str | None] = []

    def run() -> None:
        try:
            check()
            outcome.append(None)
        except Exception as error:
            outcome.append(f"{type(error).__name__}: {error}"[:300])

    thread = threading.Thread(target=run, name="callboard-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"timed out after {timeout:g}s"


def _redis_ping(broker: RedisBroker, timeout: float) -> None:
    pool = broker.client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout, "socket_connect_timeout": timeout}
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    try:
        client.ping()
    finally:
        client.close()
        client.connection_pool.disconnect()


def _rabbitmq_connect(broker: Any, timeout: float) -> None:
    import pika

    configured = broker.parameters[0] if isinstance(broker.parameters, list) else broker.parameters
    parameters = copy.copy(configured)  # the broker's own parameters keep their timeouts
    parameters.socket_timeout = timeout
    parameters.blocked_connection_timeout = timeout
    parameters.connection_attempts = 1
    connection = pika.BlockingConnection(parameters)
    connection.close()


def broker_problem(broker: Broker, timeout: float = 3.0) -> str | None:
    """Why ``broker`` cannot be reached, or ``None`` when it answers."""
    if isinstance(broker, RedisBroker):
        return bounded(lambda: _redis_ping(broker, timeout), timeout + 0.5)
    if hasattr(broker, "parameters"):
        return bounded(lambda: _rabbitmq_connect(broker, timeout), timeout + 0.5)
    return None  # a stub broker in tests: always there


def broker_url_problem(url: str, timeout: float = 3.0) -> str | None:
    """Why the broker at ``url`` cannot be reached, or ``None``; for processes without a broker
    object of their own (the worker supervisor)."""

    def check() -> None:
        if url.startswith(("amqp://", "amqps://")):
            import pika

            parameters = pika.URLParameters(url)
            parameters.socket_timeout = timeout
            parameters.blocked_connection_timeout = timeout
            parameters.connection_attempts = 1
            pika.BlockingConnection(parameters).close()
            return
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
            client.connection_pool.disconnect()

    return bounded(check, timeout + 0.5)


def _select_one(url: str | None) -> None:
    with get_engine(url).connect() as connection:
        connection.execute(text("SELECT 1"))


def database_problem(url: str | None = None, timeout: float = 6.0) -> str | None:
    """Why the database cannot be reached, or ``None`` when it answers ``SELECT 1``."""
    return bounded(lambda: _select_one(url), timeout)


class Cached:
    """Remember a probe's answer for ``ttl`` seconds, so frequent HTTP probes cost one check."""

    def __init__(self, probe: Callable[[], str | None], ttl: float = 5.0) -> None:
        self.probe = probe
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._value: str | None = None

    def __call__(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                self._value = self.probe()
                self._at = time.monotonic()
            return self._value
