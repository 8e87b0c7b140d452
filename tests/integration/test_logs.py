"""Structured logs of a real worker: one ``message.finished`` line per attempt with the context
fields, and no sensitive argument in clear even when an actor logs it itself."""

from __future__ import annotations

import pytest
from dramatiq import Broker

from service import send
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.records import entries
from tests.support.waiting import wait_until


@pytest.mark.usefixtures("operator_env")
def test_finished_lines_carry_context_duration_and_outcome(
    producer: Broker, start_worker: StartWorker
) -> None:
    worker = start_worker(CALLBOARD_LOG_LEVEL="DEBUG")  # successes are logged at DEBUG
    message_id = send("tb_record", ["finished"], request_id="req-42")
    send("tb_fail", ["finished-fail"], max_retries=1, min_backoff=10, max_backoff=20)
    lines = wait_until(
        lambda: len(worker.events("message.finished")) >= 3 and worker.events("message.finished"),
        timeout=30,
        message="three finished lines",
    )
    ok = next(line for line in lines if line.get("message_id") == message_id)
    assert ok["outcome"] == "success" and ok["level"] == "debug"
    assert ok["actor"] == "tb_record" and ok["queue"] == QUEUE and ok["attempt"] == 1
    assert ok["request_id"] == "req-42" and ok["duration_s"] >= 0
    failed = sorted((line for line in lines if line["actor"] == "tb_fail"), key=lambda line: line["attempt"])
    assert [(line["attempt"], line["outcome"]) for line in failed] == [(1, "retry"), (2, "dead")]
    assert all(line["level"] == "warning" for line in failed)


@pytest.mark.usefixtures("operator_env")
def test_an_actor_logging_its_own_secret_is_redacted(producer: Broker, start_worker: StartWorker) -> None:
    secret = "tok-9f8e7d6c5b4a"
    worker = start_worker()
    send("tb_log_secret", ["careless", secret])
    wait_until(lambda: entries("careless", "done"), timeout=30, message="the careless actor ran")
    wait_until(lambda: "call failed" in worker.log_path.read_text(), timeout=10, message="its log lines")
    text = worker.log_path.read_text()
    assert secret not in text
    assert "calling the API with [redacted]" in text
    assert "refused token [redacted]" in text  # in the logged traceback too


@pytest.mark.usefixtures("operator_env")
def test_at_info_only_attempts_that_did_not_succeed_are_logged(
    producer: Broker, start_worker: StartWorker
) -> None:
    worker = start_worker()  # CALLBOARD_LOG_LEVEL defaults to INFO
    send("tb_record", ["quiet"])
    send("tb_throws", ["loud"])
    wait_until(lambda: entries("quiet", "done") and worker.events("message.finished"), timeout=30)
    finished = worker.events("message.finished")
    assert [(line["actor"], line["outcome"]) for line in finished] == [("tb_throws", "dead")]
