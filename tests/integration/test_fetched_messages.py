"""What a worker gets for each fetched message, on each broker: the proxy's fields at hand."""

from __future__ import annotations

from pathlib import Path

from dramatiq import Message

from config.settings import load_settings
from service.brokers.factory import build_broker
from tests.support.actors import QUEUE
from tests.support.waiting import wait_until


def test_a_fetched_message_carries_its_fields_as_its_own_attributes(broker_url: str, tmp_path: Path) -> None:
    # Dramatiq's proxy reaches them through __getattr__, at about 0.5 us a read, and the
    # middleware read them dozens of times a message (bench/README.md, "Status tracking cost").
    broker = build_broker(load_settings(data_dir=tmp_path), url=broker_url)
    try:
        broker.declare_queue(QUEUE)
        broker.enqueue(Message(queue_name=QUEUE, actor_name="a", args=(7,), kwargs={}, options={}))
        consumer = broker.consume(QUEUE, prefetch=1, timeout=100)
        fetched = wait_until(lambda: next(consumer), timeout=10, message="the message fetched")
        own = vars(fetched)
        fields = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
        for name in fields:
            assert name in own and own[name] == getattr(fetched._message, name), name
        assert fetched.options is fetched._message.options  # one dictionary: a change shows on both
        assert fetched.args == (7,) and not fetched.failed
        assert fetched.copy().message_id == fetched.message_id  # the message's methods still answer
        consumer.ack(fetched)
        consumer.close()
    finally:
        broker.close()
