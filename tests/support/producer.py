"""This test process as a producer: a Callboard broker installed, with the test actors on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import dramatiq
import pytest
from dramatiq import Broker

from config.settings import load_settings
from service import runtime
from service.brokers.factory import build_broker
from tests.support import records


def adopt_actors(module: ModuleType, broker: Broker) -> None:
    """Declare ``module``'s actors on ``broker`` (they were bound to the first broker imported)."""
    for value in vars(module).values():
        if isinstance(value, dramatiq.Actor) and value.broker is not broker:
            value.broker = broker
            broker.declare_actor(value)


@contextmanager
def producing_on(
    url: str, record_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    """Install a broker for ``url`` in this process, with the test actors; close it after."""
    monkeypatch.setenv(records.RECORD_URL_VARIABLE, record_url)
    records._client = None
    broker = build_broker(load_settings(data_dir=data_dir), url=url)
    runtime.install(broker)
    import tests.support.actors as test_actors

    adopt_actors(test_actors, broker)
    try:
        yield broker
    finally:
        broker.close()
        records._client = None
