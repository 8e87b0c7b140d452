"""The Redis that holds Callboard's shared state (worker heartbeats, and the stores that follow).

``CALLBOARD_REDIS_URL`` when set, else the broker's own Redis; ``None`` when the broker is
RabbitMQ and no Redis is configured (features that need it report themselves as unavailable).
"""

from __future__ import annotations

import threading

import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker

from config.settings import Settings

_clients: dict[str, redis.Redis] = {}
_quick: dict[tuple[str, float], redis.Redis] = {}
_lock = threading.Lock()


def state_client(broker: Broker, settings: Settings, *, timeout: float | None = None) -> redis.Redis | None:
    """A client of the shared-state Redis for this process, or ``None`` if there is none.

    With ``timeout``, a client of the same server whose connects and commands give up after
    ``timeout`` seconds (for callers that have somewhere else to go, such as idempotency claims
    that fall back to the database), with a pool of its own.
    """
    client = _default_client(broker, settings)
    if client is None or timeout is None:
        return client
    pool = client.connection_pool
    # Keyed by where it connects, not by the client object: brokers come and go (tests, forks).
    key = (f"{pool.connection_class.__name__}{sorted(pool.connection_kwargs.items())!r}", timeout)
    with _lock:
        quick = _quick.get(key)
        if quick is None:
            kwargs = {**pool.connection_kwargs, "socket_connect_timeout": timeout, "socket_timeout": timeout}
            quick = _quick[key] = redis.Redis(
                connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            )
        return quick


def same_database(first: redis.Redis, second: redis.Redis) -> bool:
    """Whether two clients reach the same Redis database (same server address and number)."""

    def where(client: redis.Redis) -> tuple[object, ...]:
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        return (
            pool.connection_class.__name__,
            kwargs.get("host"),
            kwargs.get("port"),
            kwargs.get("path"),
            kwargs.get("db", 0),
        )

    return first is second or where(first) == where(second)


def _default_client(broker: Broker, settings: Settings) -> redis.Redis | None:
    if settings.redis_url:
        client = _clients.get(settings.redis_url)
        if client is None:
            client = _clients[settings.redis_url] = redis.Redis.from_url(
                settings.redis_url, socket_connect_timeout=5, socket_timeout=10
            )
        return client
    if isinstance(broker, RedisBroker):
        state: redis.Redis = broker.client
        return state
    return None


def state_client_or_none(broker: Broker, settings: Settings) -> redis.Redis | None:
    """:func:`state_client`, or ``None`` when no client can be built from the settings (a malformed
    ``CALLBOARD_REDIS_URL``): for features that fail open without shared state."""
    try:
        return state_client(broker, settings)
    except (ValueError, redis.RedisError):
        return None
