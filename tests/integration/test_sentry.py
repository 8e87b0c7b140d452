"""Sentry: a real worker sends real envelopes (to a local HTTP server standing in for Sentry).

One event per dead letter however many attempts failed, none for a retried message that
recovers, no sensitive value anywhere in what is sent; plus ``before_send`` on hand-built events
and ``init_sentry`` in fresh interpreters.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Broker, Message
from dramatiq.broker import MessageProxy
from pytest_httpserver import HTTPServer

import tests.support.sentry_actors as sentry_actors
from service import send
from service.deadletters.capture import mark_dead
from service.redaction import REDACTED
from service.sentry import HINT_KEY, RunningMessage, before_send, before_send_transaction, default_release
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.processes import ROOT, command_env
from tests.support.producer import adopt_actors, producing_on
from tests.support.records import entries
from tests.support.waiting import wait_until

EMAIL = "alice.sentry@example.com"
PASSWORD = "hunter2-sentry-pw"
TOKEN = "tok_5f3a9c1e77b"
EMAIL_KW = "bob.keywords@example.org"
PASSWORD_KW = "correct-horse-kw"
TOKEN_KW = "tok_kw_90210xyz"
EMAIL_FLAKY = "carol.flaky@example.net"
EMAIL_LOGGED = "dave.logged@example.com"
EMAIL_REFUSED = "erin.refused@example.com"
SECRETS = (EMAIL, PASSWORD, TOKEN, EMAIL_KW, PASSWORD_KW, TOKEN_KW, EMAIL_FLAKY, EMAIL_LOGGED, EMAIL_REFUSED)

ENVELOPE_PATH = "/api/1/envelope/"


# --- the stand-in for Sentry -------------------------------------------------------------------


@pytest.fixture
def sentry_server(httpserver: HTTPServer) -> HTTPServer:
    """A local HTTP server that accepts Sentry envelopes (``httpserver.log`` keeps each request)."""
    httpserver.expect_request(ENVELOPE_PATH, method="POST").respond_with_json({})
    return httpserver


def dsn(server: HTTPServer) -> str:
    return f"http://public@{server.host}:{server.port}/1"


def bodies(server: HTTPServer) -> list[bytes]:
    """Every envelope received so far, decompressed."""
    result = []
    for request, _response in list(server.log):
        if request.path != ENVELOPE_PATH:
            continue
        body = request.get_data()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            brotli = pytest.importorskip("brotli")
            body = brotli.decompress(body)
        result.append(body)
    return result


def parse_envelope(raw: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """The items of one envelope: ``(item header, payload)``."""
    _header, _, rest = raw.partition(b"\n")
    items = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        item_header = json.loads(line)
        length = item_header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length + 1 :]
        items.append((item_header, payload))
    return items


def events(server: HTTPServer) -> list[dict[str, Any]]:
    """Every error event received so far."""
    return [
        json.loads(payload)
        for body in bodies(server)
        for header, payload in parse_envelope(body)
        if header.get("type") == "event"
    ]


# --- a real worker -----------------------------------------------------------------------------


@pytest.fixture
def sentry_producer(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broker]:
    """This process as a producer on the run's Redis, with the Sentry test actors declared."""
    with producing_on(redis_url, redis_url, tmp_path / "var", monkeypatch) as broker:
        adopt_actors(sentry_actors, broker)
        yield broker


def test_a_worker_sends_one_scrubbed_event_per_dead_letter(
    sentry_server: HTTPServer, sentry_producer: Broker, start_worker: StartWorker
) -> None:
    # Given a worker reporting to Sentry
    worker = start_worker(
        CALLBOARD_SENTRY_DSN=dsn(sentry_server),
        CALLBOARD_SENTRY_ENVIRONMENT="sentry-test",
        CALLBOARD_ACTOR_MODULES="tests.support.actors,tests.support.sentry_actors",
    )
    tags = {
        name: f"{name}-{uuid.uuid4().hex[:8]}"
        for name in ("positional", "keywords", "flaky", "logs", "refused")
    }

    # When two messages fail three times each (secrets passed positionally, then as keywords),
    # one fails once and then succeeds, and one logs an ERROR of its own
    positional = send(
        "tb_sentry_leak", [tags["positional"], EMAIL, PASSWORD, TOKEN], request_id="req-positional"
    )
    keywords = send(
        "tb_sentry_leak",
        [tags["keywords"]],
        {"email": EMAIL_KW, "password": PASSWORD_KW, "token": TOKEN_KW},
        request_id="req-keywords",
    )
    send("tb_sentry_flaky", [tags["flaky"], EMAIL_FLAKY])
    send("tb_sentry_logs", [tags["logs"], EMAIL_LOGGED])
    # and one raises an exception of its actor's ``throws`` (non-retryable: dead at once)
    refused = send("tb_sentry_refused", [tags["refused"], EMAIL_REFUSED])
    for name in ("positional", "keywords"):
        wait_until(lambda name=name: len(entries(tags[name], "attempt")) == 3, message=f"3 attempts ({name})")
    wait_until(lambda: entries(tags["flaky"], "done"), message="the flaky message done")
    wait_until(lambda: entries(tags["logs"], "done"), message="the logging message done")
    wait_until(lambda: entries(tags["refused"], "attempt"), message="the refused message ran")
    wait_until(lambda: len(events(sentry_server)) >= 4, message="4 Sentry events")
    worker.stop()  # flushes Sentry; whatever was still queued is now sent

    # Then exactly one event per dead letter, plus the actor's own ERROR log, and nothing else
    received = events(sentry_server)
    failures = [event for event in received if event.get("exception")]
    logged = [event for event in received if not event.get("exception")]
    assert sorted(event["tags"]["message_id"] for event in failures) == sorted(
        [positional, keywords, refused]
    )
    assert len(logged) == 1, logged
    assert logged[0]["logger"] == "tests.support.sentry_actors"
    assert logged[0]["logentry"]["formatted"] == f"could not reach {REDACTED}, carrying on"

    by_id = {event["tags"]["message_id"]: event for event in failures}
    for message_id, request_id in ((positional, "req-positional"), (keywords, "req-keywords")):
        event = by_id[message_id]
        assert event["tags"]["queue"] == QUEUE
        assert event["tags"]["actor"] == "tb_sentry_leak"
        assert event["tags"]["request_id"] == request_id
        assert event["tags"]["dead_letter_reason"] == "exhausted"
        assert event["contexts"]["dead_letter"] == {"reason": "exhausted", "attempts": 3}
        assert event["environment"] == "sentry-test"
        assert event["release"] == default_release() == "callboard@0.1.0"
        exception = event["exception"]["values"][-1]
        assert exception["type"] == "ValueError"
        assert exception["value"].startswith(f"bad address {REDACTED} (password {REDACTED}")
        frame = next(f for f in exception["stacktrace"]["frames"] if f["function"] == "tb_sentry_leak")
        assert frame["vars"]["email"] == frame["vars"]["password"] == frame["vars"]["token"] == REDACTED
        assert frame["vars"]["profile"] == {"user_email": REDACTED, "api_token": REDACTED}
        assert REDACTED in frame["vars"]["note"]
    refusal = by_id[refused]
    assert refusal["tags"]["dead_letter_reason"] == "non_retryable"
    assert refusal["contexts"]["dead_letter"] == {"reason": "non_retryable", "attempts": 1}
    assert refusal["exception"]["values"][-1]["value"] == f"{REDACTED} may not receive this"
    data_positional = by_id[positional]["contexts"]["dramatiq"]["data"]
    assert data_positional["args"] == [tags["positional"], REDACTED, REDACTED, REDACTED]
    data_keywords = by_id[keywords]["contexts"]["dramatiq"]["data"]
    assert data_keywords["kwargs"] == {"email": REDACTED, "password": REDACTED, "token": REDACTED}

    # And no secret anywhere in any envelope (events, client reports, everything)
    raw = b"".join(bodies(sentry_server))
    for secret in SECRETS:
        assert secret.encode() not in raw, secret


# --- before_send on hand-built events ----------------------------------------------------------


def notify(tag: str, email: str, password: str, token: str = "") -> None:
    """The actor function whose signature names the positional arguments."""


def running(args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> RunningMessage:
    message = Message(
        queue_name="email",
        actor_name="notify",
        args=args,
        kwargs=kwargs or {},
        options={"request_id": "req-1", "retries": 2},
        message_id="m-1",
    )
    return RunningMessage(MessageProxy(message), notify)


def failure_event(data: dict[str, Any], value: str, mechanism: str = "dramatiq") -> dict[str, Any]:
    """An event as Sentry's Dramatiq middleware builds it (already serialized)."""
    return {
        "level": "error",
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": value,
                    "mechanism": {"type": mechanism, "handled": False},
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "notify",
                                "vars": {
                                    "email": f"'{EMAIL}'",
                                    "note": f"'mail for {EMAIL} with {PASSWORD}'",
                                    "profile": {"user_email": f"'{EMAIL}'", "age": "42"},
                                },
                            }
                        ]
                    },
                }
            ]
        },
        "contexts": {"dramatiq": {"type": "dramatiq", "data": data}, "trace": {"trace_id": "abc"}},
        "extra": {"dramatiq_message_id": "m-1", "sys.argv": ["callboard", "worker"], "api_key": "k-123456"},
        "request": {"data": {"email": EMAIL}, "headers": {"Authorization": "Bearer s3cr3t-bearer"}},
        "breadcrumbs": {
            "values": [
                {"message": f"sending to {EMAIL}", "data": {"user_email": EMAIL, "attempt": 1}},
                {"message": "login password=pw-in-text9 ok", "data": {}},
            ]
        },
        "logentry": {"message": "x %s", "params": [f"'{TOKEN}'"], "formatted": f"x {TOKEN}"},
        "tags": {},
    }


def message_data(args: list[Any], kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "queue_name": "email",
        "actor_name": "notify",
        "message_id": "m-1",
        "args": args,
        "kwargs": kwargs or {},
        "options": {"request_id": "req-1", "session_token": "opt-token-777"},
    }


def test_before_send_redacts_by_name_and_scrubs_the_values_everywhere() -> None:
    # Given a dead message's event with secrets in every place Sentry puts data
    message = running(("t", EMAIL, PASSWORD, TOKEN))
    mark_dead(message.message, "exhausted", ValueError("x"), 3)
    error = ValueError(f"bad address {EMAIL} ({PASSWORD}, {TOKEN})")
    event = failure_event(message_data(["t", EMAIL, PASSWORD, TOKEN]), str(error))

    # When Sentry hands it to before_send
    result = before_send(event, {"exc_info": (ValueError, error, None), HINT_KEY: message})

    # Then it is kept, tagged, and nothing sensitive is left in it
    assert result is not None
    text = json.dumps(result)
    for secret in (EMAIL, PASSWORD, TOKEN, "k-123456", "s3cr3t-bearer", "pw-in-text9", "opt-token-777"):
        assert secret not in text, secret
    assert result["tags"] == {
        "queue": "email",
        "actor": "notify",
        "message_id": "m-1",
        "request_id": "req-1",
        "dead_letter_reason": "exhausted",
        "attempts": "3",
    }
    assert result["contexts"]["dead_letter"] == {"reason": "exhausted", "attempts": 3}
    data = result["contexts"]["dramatiq"]["data"]
    assert data["args"] == ["t", REDACTED, REDACTED, REDACTED]
    assert data["options"] == {"request_id": "req-1", "session_token": REDACTED}
    assert result["exception"]["values"][0]["value"] == f"bad address {REDACTED} ({REDACTED}, {REDACTED})"
    frame_vars = result["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame_vars == {
        "email": REDACTED,
        "note": f"'mail for {REDACTED} with {REDACTED}'",
        "profile": {"user_email": REDACTED, "age": "42"},
    }
    assert result["extra"]["sys.argv"] == ["callboard", "worker"]
    assert result["breadcrumbs"]["values"][0] == {
        "message": f"sending to {REDACTED}",
        "data": {"user_email": REDACTED, "attempt": 1},
    }
    assert result["logentry"]["formatted"] == f"x {REDACTED}"
    assert result["contexts"]["trace"] == {"trace_id": "abc"}


def test_before_send_without_the_message_judges_keywords_and_scrubs_their_values() -> None:
    # Given an event of an actor this process does not know, its secrets passed as keywords
    data = message_data(["t"], {"email": EMAIL_KW, "password": PASSWORD_KW})
    event = failure_event(data, f"cannot mail {EMAIL_KW}", mechanism="generic")

    result = before_send(event, {})

    assert result is not None
    assert result["contexts"]["dramatiq"]["data"]["kwargs"] == {"email": REDACTED, "password": REDACTED}
    assert result["exception"]["values"][0]["value"] == f"cannot mail {REDACTED}"
    assert EMAIL_KW not in json.dumps(result) and PASSWORD_KW not in json.dumps(result)
    assert result["tags"]["actor"] == "notify" and result["tags"]["request_id"] == "req-1"


def test_before_send_drops_the_events_of_attempts_that_will_be_retried() -> None:
    # Given the worker's event for a failed attempt that Retries decided to retry
    message = running(("t", EMAIL, PASSWORD))
    error = ValueError("boom")
    event = failure_event(message_data(["t", EMAIL, PASSWORD]), "boom")
    hint = {"exc_info": (ValueError, error, None), HINT_KEY: message}

    # Then it is dropped; once the message is dead-lettered, the same event is kept
    assert before_send(event, hint) is None
    mark_dead(message.message, "exhausted", error, 3)
    assert before_send(failure_event(message_data(["t", EMAIL, PASSWORD]), "boom"), hint) is not None


def test_before_send_drops_log_events_that_repeat_a_reported_failure() -> None:
    def record(name: str, msg: str, **extra: Any) -> logging.LogRecord:
        made = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (), None)
        made.__dict__.update(extra)
        return made

    dramatiq_failure = record(
        "dramatiq.worker.WorkerThread", "Failed to process message %s with unhandled exception."
    )
    dead = record("service.middleware.retries", "message.dead", event="message.dead")
    own_error = record("myapp.tasks", "could not reach %s")
    assert before_send({"logger": dramatiq_failure.name}, {"log_record": dramatiq_failure}) is None
    assert before_send({"logger": dead.name}, {"log_record": dead}) is None
    assert before_send({"logger": own_error.name}, {"log_record": own_error}) is not None


def test_transactions_are_scrubbed_too() -> None:
    message = running(("t", EMAIL, PASSWORD))
    transaction = {
        "type": "transaction",
        "contexts": {"dramatiq": {"data": message_data(["t", EMAIL, PASSWORD])}},
        "spans": [{"op": "db", "description": f"lookup {EMAIL}", "data": {"password": PASSWORD}}],
    }
    result = before_send_transaction(transaction, {HINT_KEY: message})
    assert result is not None
    assert EMAIL not in json.dumps(result) and PASSWORD not in json.dumps(result)


# --- init_sentry in fresh interpreters ---------------------------------------------------------


def run_python(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=command_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_without_a_dsn_sentry_stays_off_and_unimported() -> None:
    out = run_python(
        "import sys; from service.sentry import init_sentry, flush_sentry; "
        "on = init_sentry(); flush_sentry(); print(on, 'sentry_sdk' in sys.modules)"
    )
    assert out == "False False"


def test_init_is_idempotent_and_puts_sentry_first_in_every_broker_built_after(
    sentry_server: HTTPServer,
) -> None:
    # Sentry's after_process_message must run after Retries' (so message.failed is decided):
    # Dramatiq runs after_* hooks in reverse order, so Sentry's middleware must come first.
    out = run_python(
        "import sentry_sdk\n"
        "from service import runtime\n"
        "from service.sentry import init_sentry\n"
        "broker = runtime.get_broker()\n"
        "client = sentry_sdk.get_client()\n"
        "again = init_sentry()\n"
        "names = [type(m).__name__ for m in broker.middleware]\n"
        "print(again, sentry_sdk.get_client() is client, client.options['release'], ','.join(names))",
        CALLBOARD_SENTRY_DSN=dsn(sentry_server),
        CALLBOARD_BROKER_URL="redis://127.0.0.1:1/0",  # building a broker connects to nothing
    )
    again, same, release, names = out.split(" ")
    assert (again, same, release) == ("True", "True", "callboard@0.1.0")
    order = names.split(",")
    assert order[:3] == ["SentryMiddleware", "SentryContext", "MessageContext"]
    assert order.index("SentryMiddleware") < order.index("Retries")
