"""The Breakers middleware alone, on a StubBroker with the breaker state in a real Redis: an open
breaker delays the message (a copy re-enqueued with its retries unchanged, before the original is
skipped), a copy that cannot be enqueued sends the original back to its queue, and a breaker
store that cannot be reached lets the message run."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import SkipMessage

from config.settings import load_settings
from service.breakers.store import BreakerStore
from service.brokers.disposition import Disposition, disposition_of
from service.metrics.definitions import BREAKER_DELAYED
from service.middleware.breakers import Breakers
from tests.support.ports import free_port


def broker_with(redis_url: str) -> tuple[StubBroker, Breakers, dramatiq.Actor[Any, Any]]:
    settings = load_settings(redis_url=redis_url, breaker_failure_threshold=1, breaker_recovery_timeout=30)
    breakers = Breakers(settings)
    broker = StubBroker(middleware=[breakers])

    @dramatiq.actor(broker=broker, queue_name="calls", circuit_breaker="partner")
    def call_partner(n: int) -> None: ...

    return broker, breakers, call_partner


def test_an_open_breaker_delays_the_message_with_its_retries_unchanged(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given the breaker "partner" open (one failure, threshold 1)
    broker, breakers, call_partner = broker_with(redis_url)
    BreakerStore(redis_client, threshold=1, recovery=30).record("partner", "failure")
    delayed_before = BREAKER_DELAYED.labels(breaker="partner")._value.get()
    message = MessageProxy(call_partner.message_with_options(args=(7,), retries=2))
    # When a worker is about to run a message of the actor
    with pytest.raises(SkipMessage):
        breakers.before_process_message(broker, message)
    # Then a copy waits in the delay queue, same id, same retries, due after the recovery timeout
    (body,) = broker.queues[dq_name("calls")].queue
    copy = Message.decode(body)
    assert copy.message_id == message.message_id and copy.args == (7,)
    assert copy.options["retries"] == 2 and copy.options["eta"] >= message.message_timestamp + 29_000
    assert BREAKER_DELAYED.labels(breaker="partner")._value.get() == delayed_before + 1
    assert disposition_of(message) is None  # acked: the copy carries it on


def test_a_delay_that_cannot_be_enqueued_sends_the_original_back(
    redis_url: str, redis_client: redis.Redis
) -> None:
    broker, breakers, call_partner = broker_with(redis_url)
    BreakerStore(redis_client, threshold=1, recovery=30).record("partner", "failure")
    message = MessageProxy(call_partner.message(1))
    del broker.queues[dq_name("calls")]  # the enqueue of the delayed copy fails
    with pytest.raises(SkipMessage):
        breakers.before_process_message(broker, message)
    assert disposition_of(message) is Disposition.REQUEUE


def test_an_unreachable_breaker_store_lets_the_message_run() -> None:
    broker, breakers, call_partner = broker_with(f"redis://127.0.0.1:{free_port()}/0")
    message = MessageProxy(call_partner.message(1))
    breakers.before_process_message(broker, message)  # no SkipMessage: it runs
    breakers.after_process_message(broker, message, exception=RuntimeError("partner down"))
