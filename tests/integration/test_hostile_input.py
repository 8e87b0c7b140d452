"""Hostile input on real brokers: bodies pushed straight into Redis or RabbitMQ, past every check
a producer makes, each end in the dead-letter store with its reason, and the worker goes on.

What each body is refused for, without a broker: ``tests/unit/test_intake.py``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from dramatiq import Broker

from service import send
from service.deadletters import store
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.processes import CallboardProcess, run_callboard
from tests.support.records import entries
from tests.support.waiting import wait_until

#: Log lines that mean a consumer or worker thread failed, or a middleware raised.
CRASH_SIGNS = ("Traceback", "Consumer encountered", "Unexpected failure in", "Unhandled error")


def fields(case: str, **overrides: Any) -> dict[str, Any]:
    """A ``tb_record`` message named ``case`` as JSON fields (the case first, so it shows in
    the first bytes of any dead letter), with ``overrides``."""
    return {
        "message_id": case,
        "queue_name": QUEUE,
        "actor_name": "tb_record",
        "args": [case],
        "kwargs": {},
        "options": {},
        "message_timestamp": int(time.time() * 1000),
        **overrides,
    }


def body(case: str, **overrides: Any) -> bytes:
    return json.dumps(fields(case, **overrides)).encode()


def deep(case: str, depth: int) -> bytes:
    """A message whose argument is nested ``depth`` lists deep (written out: encoding recurses)."""
    head = json.dumps({key: value for key, value in fields(case).items() if key != "args"})[:-1]
    return f'{head}, "args": [{"[" * depth}{"]" * depth}]}}'.encode()


def push_raw(broker: Broker, raw: bytes, queue: str = QUEUE) -> None:
    """Put ``raw`` on ``queue`` as it is, the way Dramatiq stores a message (a hostile producer)."""
    if hasattr(broker, "client"):
        redis_id = f"raw-{time.monotonic_ns()}"
        pipe = broker.client.pipeline()
        pipe.hset(f"dramatiq:{queue}.msgs", redis_id, raw)
        pipe.rpush(f"dramatiq:{queue}", redis_id)
        pipe.execute()
    else:
        broker._ensure_queue(queue)
        broker.channel.basic_publish(exchange="", routing_key=queue, body=raw, mandatory=True)


#: (case, body, reason, what the stored exception says); every broker.
HOSTILE = [
    ("oversized", body("oversized", args=["x" * 300_000]), "oversized", "MessageTooLarge: body of"),
    ("nested_10000", deep("nested_10000", 10_000), "undecodable", "JSON nested too deeply"),
    ("nested_100", deep("nested_100", 100), "undecodable", "nested deeper than 64 levels"),
    ("not_json", b'\x00\xff "not_json"', "undecodable", "can't decode byte 0xff"),
    ("cut_json", b'{"message_id": "cut_json", "queue_name": "', "undecodable", "Unterminated string"),
    ("json_array", b'["json_array", 1]', "undecodable", "a JSON array, not an object"),
    ("missing_fields", b'{"message_id": "missing_fields"}', "undecodable", "missing queue_name"),
    ("args_string", body("args_string", args="abc"), "undecodable", "args must be an array"),
    ("kwargs_number", body("kwargs_number", kwargs=5), "undecodable", "kwargs must be an object"),
    ("options_array", body("options_array", options=[]), "undecodable", "options must be an object"),
    ("actor_number", body("actor_number", actor_name=42), "undecodable", "actor_name must be a string"),
    ("max_retries", body("max_retries", options={"max_retries": "x"}), "bad_options", "'max_retries'"),
    ("eta", body("eta", options={"eta": "soon"}), "bad_options", "'eta'"),
    ("time_limit", body("time_limit", options={"time_limit": -1}), "bad_options", "'time_limit'"),
    ("throws", body("throws", options={"throws": "KeyError"}), "bad_options", "'throws'"),
    ("claims_critical", body("claims_critical", queue_name="critical"), "wrong_queue", "names queue"),
]


def dead_letters() -> dict[str, dict[str, Any]]:
    """Every dead letter in full, by the case it came from (its message id, or the case named
    in its raw body)."""
    found = {}
    for summary in store.list_dead(store.Selection(state=None), limit=1000):
        full = store.detail(store.get(int(summary["id"])))  # type: ignore[arg-type]
        case = full["message_id"] or next(
            (case for case, *_ in HOSTILE if f'"{case}"' in (full["raw_body"] or "")),
            f"? {full['raw_body']}",
        )
        found[case] = full
    return found


def assert_no_crash(worker: CallboardProcess) -> None:
    assert worker.process.poll() is None, "the worker exited"
    text = worker.log_path.read_text()
    assert not [sign for sign in CRASH_SIGNS if sign in text], text[-5000:]
    assert not worker.events("worker.crashed")


@pytest.mark.usefixtures("operator_env")
def test_each_hostile_body_ends_in_the_store_with_its_reason_and_work_goes_on(
    producer: Broker, start_worker: StartWorker
) -> None:
    # Given a worker
    worker = start_worker()
    hostile = list(HOSTILE)
    if hasattr(producer, "client"):  # catalogue queues are shared on the suite's RabbitMQ
        # tb_record's queue is outside the catalogue: 'critical' is served sooner
        hostile.append(
            ("moved_to_critical", body("moved_to_critical", queue_name="critical"), "wrong_queue", "sooner")
        )
    # When hostile bodies arrive on its queues, between harmless odd ones
    push_raw(producer, body("unknown_options", options={"colour": "blue", "deep": {"a": [1, {"b": 2}]}}))
    push_raw(producer, body("ping_moved", actor_name="ping", args=[]))  # to a quieter queue: runs
    for case, raw, *_ in hostile:
        push_raw(producer, raw, "critical" if case == "moved_to_critical" else QUEUE)
    # And good messages are sent after them
    for n in range(20):
        send("tb_record", ["after", n])
    # Then every good message runs, and so do the odd ones
    wait_until(lambda: len(entries("after", "done")) == 20, timeout=60, message="20 good messages")
    wait_until(lambda: entries("unknown_options", "done"), message="the message with unknown options")
    worker.wait_for_event("diagnostics.pong")
    # And each hostile body is one dead letter with its reason and what was wrong
    letters = wait_until(
        lambda: len(dead := dead_letters()) >= len(hostile) and dead, timeout=60, message="the dead letters"
    )
    assert sorted(letters) == sorted(case for case, *_ in hostile)
    for case, _, reason, error in hostile:
        letter = letters[case]
        assert letter["reason"] == reason, (case, letter)
        assert error in (letter["exception"] or ""), (case, letter["exception"])
        assert "\n" not in letter["exception"]
        if reason in {"bad_options", "wrong_queue"}:  # a decoded message keeps what it was
            assert (letter["actor"], letter["args"], letter["attempts"]) == ("tb_record", [case], 0)
        else:  # garbage: no id or actor to trust, the start of the body to read
            assert letter["actor"] is None and 0 < len(letter["raw_body"]) <= 1024
    # And the worker logged each refusal on one line, and no thread crashed
    refused = worker.events("message.rejected") + worker.events("message.undecodable")
    assert len(refused) == len(hostile)
    assert_no_crash(worker)
    # And nothing was left behind in the broker: raw bodies were acked by the id they came with
    if hasattr(producer, "client"):
        wait_until(
            lambda: (
                producer.client.hlen(f"dramatiq:{QUEUE}.msgs") == 0
                and producer.client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
            ),
            message="empty message and dead-letter hashes",
        )


@pytest.mark.usefixtures("operator_env")
def test_sends_over_the_limit_are_refused_on_one_line(
    producer: Broker, operator_env: dict[str, str], start_worker: StartWorker
) -> None:
    from service.middleware.validation import MessageTooLargeError
    from tests.support.actors import tb_record

    # Given the default limit (256 KiB)
    big = "x" * 300_000
    # Then send(), send_many() and Dramatiq's actor.send() refuse a larger message
    with pytest.raises(
        MessageTooLargeError, match=r"^tb_record: message of 300,\d{3} bytes is over the limit"
    ):
        send("tb_record", [big])
    with pytest.raises(MessageTooLargeError):
        tb_record.send(big)
    # And the CLI prints one line and exits 2 (a 4 KiB limit: one argv string holds 128 KiB)
    env = {**operator_env, "CALLBOARD_MAX_MESSAGE_BYTES": "4096"}
    result = run_callboard("send", "tb_record", "--args", json.dumps(["y" * 5000]), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "over the limit of 4,096 bytes" in result.stderr
    assert "Traceback" not in result.stderr
    # And a message just under the limit (its bulk in an option nothing reads) is sent and runs
    start_worker()
    send("tb_record", ["large"], padding="y" * 250_000)
    wait_until(lambda: entries("large", "done"), timeout=60, message="the large message to run")
