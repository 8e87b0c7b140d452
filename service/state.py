"""The Redis that holds Callboard's shared state (worker heartbeats, and the stores that follow).

``CALLBOARD_REDIS_URL`` when set, else the broker's own Redis; ``None`` when the broker is
RabbitMQ and no Redis is configured (features that need it report themselves as unavailable).
"""

from __future__ import annotations

import redis
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker

from config.settings import Settings

_clients: dict[str, redis.Redis] = {}


def state_client(broker: Broker, settings: Settings) -> redis.Redis | None:
    """A client of the shared-state Redis for this process, or ``None`` if there is none."""
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
