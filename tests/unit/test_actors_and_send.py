"""The @actor decorator applies policies; send/send_many validate before enqueueing.

A StubBroker is enough here: these tests check declarations and validation, not delivery.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dramatiq.brokers.stub import StubBroker

from config.settings import load_settings
from service import actor, runtime, send, send_many
from service.brokers.factory import build_middleware
from service.errors import BadArgumentsError, ConfigurationError, UnknownActorError


@pytest.fixture
def stub() -> Iterator[StubBroker]:
    broker = StubBroker(middleware=build_middleware(load_settings()))
    runtime.install(broker)
    yield broker
    broker.close()


def test_policy_fields_become_actor_options(stub: StubBroker) -> None:
    @actor(policy="email")
    def welcome(user_id: int) -> None: ...

    assert welcome.queue_name == "email"
    assert welcome.options["policy"] == "email"
    assert welcome.options["max_retries"] == 5
    assert (welcome.options["min_backoff"], welcome.options["max_backoff"]) == (60_000, 600_000)
    assert (welcome.options["soft_time_limit"], welcome.options["time_limit"]) == (100_000, 120_000)


def test_bare_decorator_uses_default_policy_and_overrides_win(stub: StubBroker) -> None:
    @actor
    def plain() -> None: ...

    @actor(policy="critical", max_retries=7, time_limit=5, queue_name="high_priority")
    def tuned() -> None: ...

    assert plain.queue_name == "default" and plain.options["max_retries"] == 3
    assert tuned.queue_name == "high_priority"
    assert tuned.options["max_retries"] == 7 and tuned.options["time_limit"] == 5000
    assert tuned.priority < plain.priority  # high_priority is served before default


def test_unknown_policy_is_a_configuration_error(stub: StubBroker) -> None:
    with pytest.raises(ConfigurationError, match="unknown policy 'nope'"):

        @actor(policy="nope")
        def broken() -> None: ...


def test_send_validates_before_enqueueing(stub: StubBroker) -> None:
    @actor
    def add(a: int, b: int = 0) -> None: ...

    with pytest.raises(UnknownActorError, match="unknown actor 'subtract'"):
        send("subtract", [1])
    with pytest.raises(BadArgumentsError, match="missing a required argument"):
        send("add")
    with pytest.raises(BadArgumentsError, match="unexpected keyword"):
        send("add", [1], {"c": 2})
    with pytest.raises(BadArgumentsError, match="not JSON"):
        send("add", [object()])
    assert stub.queues["default"].qsize() == 0


def test_send_carries_request_id_and_returns_message_ids(stub: StubBroker) -> None:
    @actor
    def add(a: int, b: int = 0) -> None: ...

    message_id = send("add", [1], {"b": 2}, request_id="req-1")
    ids = send_many("add", [[1], [2], [3]])
    queued = list(stub.queues["default"].queue)
    assert len(queued) == 4 and len(set(ids)) == 3
    from dramatiq import Message

    first = Message.decode(queued[0])
    assert first.message_id == message_id and first.options["request_id"] == "req-1"
    bulk = [Message.decode(raw) for raw in queued[1:]]
    assert [m.message_id for m in bulk] == ids
    assert len({m.options["request_id"] for m in bulk}) == 1  # one request for the whole batch


def test_send_retries_lost_connections_but_not_refused_credentials() -> None:
    import pika.exceptions
    import redis
    from dramatiq.errors import ConnectionClosed

    from service.sending import _transient

    def wrapped(cause: BaseException) -> ConnectionClosed:
        try:
            raise ConnectionClosed(cause) from None
        except ConnectionClosed as error:  # as the brokers raise it: the cause as context
            error.__context__ = cause
            return error

    assert _transient(redis.ConnectionError("Connection refused"))
    assert _transient(wrapped(redis.ConnectionError("reset")))
    assert _transient(wrapped(pika.exceptions.AMQPConnectionError()))
    assert not _transient(redis.AuthenticationError("invalid password"))
    assert not _transient(wrapped(pika.exceptions.ProbableAuthenticationError()))
    assert not _transient(redis.ResponseError("OOM command not allowed"))
