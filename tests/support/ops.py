"""This test process as a producer and operator for the ops actors (alerts, health, cleanup).

:func:`ops_producer` sets the ``CALLBOARD_*`` environment (broker and state on the run's Redis,
the test's database, the alert channels), installs a broker, and declares on it the alert,
monitoring and maintenance actors and the channel actors (``service.send`` finds them by name).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Broker, Message

from config.settings import get_settings
from tests.support.producer import adopt_actors, producing_on

EMAILS = "oncall@example.com,ops@example.com"
WEBHOOKS = "https://hooks.example.test/a,https://hooks.example.test/b"
SLACK = "https://hooks.slack.example.test/services/T0/B0/slacksecret"


def alert_env(**overrides: str) -> dict[str, str]:
    """The alert settings of these tests: two addresses, two webhooks, a Slack webhook."""
    return {
        "CALLBOARD_ALERT_EMAILS": EMAILS,
        "CALLBOARD_ALERT_WEBHOOKS": WEBHOOKS,
        "CALLBOARD_ALERT_SLACK_WEBHOOK": SLACK,
        **overrides,
    }


@contextmanager
def ops_producer(
    env: dict[str, str], redis_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    """Set ``env`` in this process and install a producer on ``redis_url`` with the ops actors."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    with producing_on(redis_url, redis_url, data_dir, monkeypatch) as broker:
        import actors.maintenance
        import actors.monitoring
        import actors.notifications.alerts
        import actors.notifications.email
        import actors.notifications.webhooks

        for module in (
            actors.notifications.alerts,
            actors.notifications.email,
            actors.notifications.webhooks,
            actors.monitoring,
            actors.maintenance,
        ):
            adopt_actors(module, broker)
        yield broker


def queued(client: redis.Redis, queue: str) -> list[Message[Any]]:
    """The messages stored for ``queue`` on a Redis broker (waiting or fetched, not yet acked)."""
    return [Message.decode(body) for body in client.hvals(f"dramatiq:{queue}.msgs")]


def enqueue_aged(broker: Broker, queue: str, age: float) -> None:
    """Put a message that has waited ``age`` seconds on ``queue`` (for no actor: it stays there)."""
    broker.declare_queue(queue)
    message: Message[Any] = Message(queue_name=queue, actor_name="nobody", args=(), kwargs={}, options={})
    broker.enqueue(message.copy(message_timestamp=message.message_timestamp - int(age * 1000)))
