"""Callboard's Redis broker on a real Redis: pipelined enqueue, wake-ups, hand-back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq import Message

from config.settings import load_settings
from service.brokers.factory import build_broker
from service.brokers.redis import Acks, CallboardRedisBroker
from tests.support.waiting import wait_until


@pytest.fixture
def broker(redis_url: str, tmp_path: Path) -> Iterator[CallboardRedisBroker]:
    built = build_broker(load_settings(data_dir=tmp_path), url=redis_url)
    assert isinstance(built, CallboardRedisBroker)
    built.declare_queue("q")
    yield built
    built.close()


def message(n: int) -> Message[None]:
    return Message(queue_name="q", actor_name="a", args=(n,), kwargs={}, options={})


def test_enqueue_survives_a_lost_script_cache(broker: CallboardRedisBroker) -> None:
    # A Redis restart empties the script cache: the pipeline must load and rerun, once.
    broker.scripts["dispatch"].sha = "0" * 40
    broker._bulk_enqueue.sha = "0" * 40
    broker.enqueue(message(0))
    broker.enqueue_many([message(n) for n in range(1, 5)])
    assert broker.client.llen("dramatiq:q") == 5
    assert broker.client.hlen("dramatiq:q.msgs") == 5


def test_bulk_enqueue_keeps_order_across_chunks(broker: CallboardRedisBroker) -> None:
    stored = broker.enqueue_many([message(n) for n in range(2500)])
    ids = [raw.decode() for raw in broker.client.lrange("dramatiq:q", 0, -1)]
    assert ids == [m.options["redis_message_id"] for m in stored]
    assert broker.client.hlen("dramatiq:q.msgs") == 2500


def test_a_push_onto_a_short_queue_wakes_idle_consumers(broker: CallboardRedisBroker) -> None:
    event = threading.Event()
    broker.wakeups.subscribe("q", event)
    wait_until(
        lambda: broker.client.pubsub_numsub(broker.wakeups.channel)[0][1] >= 1,
        message="the wake-up listener to subscribe",
    )
    event.clear()
    broker.enqueue(message(1))
    assert event.wait(5)
    # A batch larger than the notify threshold, onto an idle queue, wakes consumers too
    broker.client.delete("dramatiq:q")
    event.clear()
    broker.enqueue_many([message(n) for n in range(100)])
    assert event.wait(5)


def test_delayed_messages_go_to_the_delay_queue(broker: CallboardRedisBroker) -> None:
    [stored] = broker.enqueue_many([message(1)], delay=60_000)
    assert stored.queue_name == "q.DQ" and stored.options["eta"] > 0
    assert broker.client.llen("dramatiq:q.DQ") == 1 and broker.client.llen("dramatiq:q") == 0


def test_hand_back_returns_fetched_messages_to_their_queue(broker: CallboardRedisBroker) -> None:
    broker.enqueue_many([message(n) for n in range(3)])
    consumer = broker.consume("q", prefetch=3, timeout=100)
    fetched = [next(consumer) for _ in range(3)]
    assert all(fetched) and broker.client.llen("dramatiq:q") == 0
    assert broker.hand_back_unacked() == 3
    assert broker.client.llen("dramatiq:q") == 3


def test_a_new_consumer_reclaims_what_a_lost_fetch_reply_left_in_flight(broker: CallboardRedisBroker) -> None:
    # Given three messages fetched by this process whose reply never arrived (the connection
    # broke after Redis ran the fetch), and one handed to a thread that still runs it
    broker.enqueue_many([message(n) for n in range(4)])
    first = broker.consume("q", prefetch=1, timeout=100)
    running = next(first)
    assert running is not None
    lost = broker.ack_and_fetch("q", Acks([], []), 3)  # Redis moved them to the ack set; nobody has them
    assert len(lost) == 3 and broker.client.llen("dramatiq:q") == 0

    # When the consumer thread starts a new consumer (as Dramatiq does after a connection error)
    second = broker.consume("q", prefetch=4, timeout=100)
    fetched = [next(second) for _ in range(3)]

    # Then the three come back and run, and the running one is not put back beside its thread
    assert sorted(m.args[0] for m in fetched if m is not None) == [1, 2, 3]
    acks = f"dramatiq:__acks__.{broker.broker_id}.q"
    assert broker.client.sismember(acks, running.options["redis_message_id"])
    assert broker.client.llen("dramatiq:q") == 0
    # And a message acked but not yet flushed is not reclaimed either
    first.ack(running)
    third = broker.consume("q", prefetch=4, timeout=100)
    assert next(third) is None
    assert broker.client.llen("dramatiq:q") == 0
