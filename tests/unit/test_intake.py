"""Hostile input without a broker: what intake refuses and why, the Validation middleware on a
StubBroker worker, the limits of ``send``, and dead-letter rows built from hostile bodies.

The same bodies on real brokers and workers: ``tests/integration/test_hostile_input.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker

from config.settings import load_settings
from service import actor, intake, runtime, send
from service.brokers.factory import build_middleware
from service.deadletters.capture import DeadEntry, dead_options, rejected_body, to_row
from service.errors import BadArgumentsError, BadInputError

LIMIT = 32_000


def fields(**overrides: Any) -> dict[str, Any]:
    """A well-formed message as JSON fields, with ``overrides``."""
    base: dict[str, Any] = {
        "message_id": "m-1",
        "queue_name": "q",
        "actor_name": "a",
        "args": [1],
        "kwargs": {},
        "options": {},
        "message_timestamp": int(time.time() * 1000),
    }
    return {**base, **overrides}


def encoded(**overrides: Any) -> bytes:
    return json.dumps(fields(**overrides)).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


DEEP = encoded()[:-1] + b', "deep": ' + nested(10_000).encode() + b"}"

REFUSED = [
    pytest.param(b"x" * (LIMIT + 1), "oversized", "body of 32,001 bytes is over the limit", id="oversized"),
    pytest.param(b"\x00\xffgarbage", "undecodable", "can't decode byte 0xff", id="not-utf8"),
    pytest.param(b"not json", "undecodable", "Expecting value", id="not-json"),
    pytest.param(DEEP, "undecodable", "JSON nested too deeply", id="nested-10000"),
    pytest.param(
        encoded(args=json.loads(nested(70))), "undecodable", "nested deeper than 64 levels", id="nested-70"
    ),
    pytest.param(b"[1, 2]", "undecodable", "a JSON array, not an object", id="array"),
    pytest.param(b'{"actor_name": "a"}', "undecodable", "missing queue_name", id="missing-fields"),
    pytest.param(encoded(extra=1), "undecodable", "unknown field 'extra'", id="unknown-field"),
    pytest.param(encoded(args="abc"), "undecodable", "args must be an array", id="args-string"),
    pytest.param(encoded(kwargs=5), "undecodable", "kwargs must be an object", id="kwargs-number"),
    pytest.param(encoded(options=[]), "undecodable", "options must be an object", id="options-array"),
    pytest.param(encoded(actor_name=42), "undecodable", "actor_name must be a string", id="actor-number"),
    pytest.param(encoded(message_id="x" * 65), "undecodable", "message_id must be a string", id="long-id"),
    pytest.param(encoded(message_timestamp="now"), "undecodable", "message_timestamp", id="timestamp"),
    pytest.param(encoded(queue_name="critical"), "wrong_queue", "names queue 'critical'", id="other-queue"),
    pytest.param(encoded(options={"max_retries": "x"}), "bad_options", "'max_retries'", id="max-retries"),
    pytest.param(encoded(options={"retries": -3}), "bad_options", "'retries'", id="retries"),
    pytest.param(encoded(options={"eta": "soon"}), "bad_options", "'eta'", id="eta-text"),
    pytest.param(
        b'{"message_id": "m", "queue_name": "q", "actor_name": "a", "args": [], "kwargs": {}, '
        b'"options": {"eta": Infinity}, "message_timestamp": 1}',
        "bad_options",
        "'eta'",
        id="eta-infinite",
    ),
    pytest.param(encoded(options={"time_limit": -1}), "bad_options", "'time_limit'", id="time-limit"),
    pytest.param(encoded(options={"max_age": "1h"}), "bad_options", "'max_age'", id="max-age"),
    pytest.param(encoded(options={"throws": "KeyError"}), "bad_options", "'throws'", id="throws"),
    pytest.param(encoded(options={"pipe_target": {"a": 1}}), "bad_options", "'pipe_target'", id="pipe"),
    pytest.param(encoded(options={"request_id": 7}), "bad_options", "'request_id'", id="request-id"),
]


@pytest.mark.parametrize(("body", "reason", "error"), REFUSED)
def test_intake_refuses_each_hostile_body_with_its_reason(body: bytes, reason: str, error: str) -> None:
    with pytest.raises(intake.MessageRejected) as caught:
        intake.accept(body, "q", LIMIT)
    assert caught.value.reason == reason
    assert error in str(caught.value)
    assert "\n" not in str(caught.value)
    # A decoded message is kept (it can be requeued); garbage has no message to trust
    assert (caught.value.message is not None) == (reason in {"wrong_queue", "bad_options"})


def test_intake_ignores_unknown_options_and_accepts_what_producers_send() -> None:
    body = encoded(options={"colour": "blue", "nested": {"a": [1, {"b": None}]}, "retries": 2, "eta": None})
    assert intake.accept(body, "q", LIMIT).options["colour"] == "blue"
    sent = Message(
        queue_name="q.DQ",
        actor_name="a",
        args=({"deep": json.loads(nested(50))},),
        kwargs={"k": 1.5},
        options={"eta": 1, "max_retries": 3, "time_limit": 30_000, "keep_expired": True, "request_id": "r"},
    )
    assert intake.accept(sent.encode(), "q.DQ", LIMIT).args == sent.args


@pytest.mark.parametrize(
    ("home", "queue", "allowed"),
    [
        ("reports", "reports.DQ", True),
        ("critical", "email", True),  # to a quieter queue
        ("reports", "critical", False),  # a report on the urgent queue
        ("default", "high_priority", False),
        ("t_own", "critical", False),  # outside the catalogue ranks last
        ("t_own", "t_other", True),
        ("maintenance", "t_other", True),
    ],
)
def test_a_message_may_move_its_actor_only_to_a_queue_served_no_sooner(
    home: str, queue: str, allowed: bool
) -> None:
    problem = intake.queue_problem("job", home, queue)
    assert (problem is None) == allowed, problem


# --- the Validation middleware and send(), on a StubBroker ------------------------------------


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubBroker]:
    monkeypatch.setenv("CALLBOARD_MAX_MESSAGE_BYTES", str(LIMIT))
    broker = StubBroker(middleware=build_middleware(load_settings(metrics_port=0)))
    runtime.install(broker)
    yield broker
    broker.close()


def run_all(broker: StubBroker) -> None:
    worker = Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        broker.join("default", timeout=10_000, fail_fast=False)
        broker.join("reports", timeout=10_000, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_validation_dead_letters_bad_options_and_wrong_queues_before_anything_runs(stub: StubBroker) -> None:
    ran: list[str] = []

    @actor(policy="report", max_retries=0)
    def report(tag: str) -> None:
        ran.append(tag)

    stub.declare_queue("default")
    stub.enqueue(report.message_with_options(args=("ok",), colour="blue"))
    stub.enqueue(report.message_with_options(args=("bad",), max_retries="x"))
    stub.enqueue(report.message("moved").copy(queue_name="default"))  # default serves sooner
    run_all(stub)
    assert ran == ["ok"]
    dead = {message.args[0]: dead_options(message) for message in stub.dead_letters}
    assert dead["bad"]["reason"] == "bad_options" and dead["bad"]["attempts"] == 0
    assert "'max_retries'" in dead["bad"]["exception_message"]
    assert dead["moved"]["reason"] == "wrong_queue"
    assert "served sooner" in dead["moved"]["exception_message"]


def test_send_refuses_what_a_worker_would_dead_letter(stub: StubBroker) -> None:
    @actor(policy="report")
    def report(data: Any) -> None: ...

    with pytest.raises(BadInputError, match=r"^report: message of [\d,]+ bytes is over the limit of 32,000"):
        send("report", ["x" * LIMIT])
    with pytest.raises(BadInputError, match="over the limit"):  # Dramatiq's own send path
        report.send("x" * LIMIT)
    with pytest.raises(BadInputError, match="may not move it to 'critical'"):
        send("report", [1], queue="critical")
    with pytest.raises(BadInputError, match=r"^report: option 'time_limit' must be a number"):
        send("report", [1], time_limit="1h")
    with pytest.raises(BadArgumentsError, match="nested deeper than 64 levels"):
        send("report", [nested_list(5_000)])
    assert stub.queues["reports"].qsize() == 0
    stub.declare_queue("maintenance")  # workers declare catalogue queues; send does not
    send("report", [1], queue="maintenance")  # a quieter queue is fine
    assert stub.queues["maintenance"].qsize() == 1


def test_a_retry_that_grew_past_the_limit_is_still_enqueued(stub: StubBroker) -> None:
    stub.declare_queue("q")
    grown = Message(queue_name="q", actor_name="a", args=("x" * LIMIT,), kwargs={}, options={"retries": 1})
    stub.enqueue(grown)
    assert stub.queues["q"].qsize() == 1


# --- dead-letter rows from hostile bodies -----------------------------------------------------


def row(body: bytes, stub: StubBroker, ref: str = "r-1") -> dict[str, Any]:
    return to_row(DeadEntry(ref, "q", body), stub, load_settings(secret_key="k"))


@pytest.mark.parametrize(
    ("body", "reason", "kind"),
    [
        (b"y" * (LIMIT + 50), "oversized", "MessageTooLarge"),
        (DEEP, "undecodable", "DecodeError"),
        (encoded(kwargs=5, options={"password": "hunter22"}), "undecodable", "DecodeError"),
    ],
)
def test_a_refused_body_becomes_a_short_redacted_row_with_its_reason(
    stub: StubBroker, body: bytes, reason: str, kind: str
) -> None:
    with pytest.raises(intake.MessageRejected) as caught:
        intake.accept(body, "q", LIMIT)
    stored = row(rejected_body(body, caught.value), stub)
    assert (stored["reason"], stored["exception_type"]) == (reason, kind)
    assert stored["exception_message"] == str(caught.value)
    assert stored["message_id"] is None and stored["sealed_payload"] is None
    assert len(stored["raw_body"]) <= 1024 and "hunter22" not in stored["raw_body"]


def test_hostile_bodies_put_in_the_dead_letter_queue_by_others_never_stop_the_mover(stub: StubBroker) -> None:
    # Dramatiq's own nack, or an older version, moved these as they were
    assert row(DEEP, stub)["reason"] == "undecodable"
    assert row(encoded(args="abc"), stub)["reason"] == "undecodable"
    hostile = encoded(options={"retries": "x" * 500, "dead": {"first_failed_at": 1e300, "attempts": "many"}})
    stored = row(hostile, stub)
    assert stored["dedupe_key"] == "m-1:0" and stored["attempts"] == 1
    assert len(row(b"garbage", stub, ref="r" * 500)["dedupe_key"]) < 200
