"""send_webhook against a real HTTP server (pytest-httpserver on 127.0.0.1): signatures verify,
429 waits its Retry-After, 5xx is retried, other 4xx is dead-lettered at once, the SSRF guard
refuses private destinations, and the per-host circuit breaker opens after 5 failures, delays
messages without using their retries, and closes after one trial, across two worker processes."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from dramatiq import Broker
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from actors.notifications import webhooks as webhook_actors
from actors.notifications.webhooks import retry_after, send_webhook
from config.settings import get_settings
from service import send
from service.deadletters import store
from service.errors import (
    ConfigurationError,
    DestinationRefusedError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from service.middleware.retries import RetryAfter
from service.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from service.ssrf import check_url
from tests.integration.conftest import StartWorker
from tests.support.actors import QUEUE
from tests.support.ports import free_port
from tests.support.producer import adopt_actors
from tests.support.waiting import wait_until

SECRET = "webhook-test-secret"
#: A webhook URL's own secret (as Slack puts in its paths), which must not leak.
PATH_SECRET = "T0123-B0456-path-secret"
ALLOW_LOOPBACK = {"CALLBOARD_WEBHOOK_SECRET": SECRET, "CALLBOARD_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set ``CALLBOARD_*`` variables for direct calls of the actor's function."""

    def apply(values: dict[str, str]) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    return apply


def test_the_signature_verifies_and_covers_the_body(
    receiver: HTTPServer, settings_env: Callable[..., None]
) -> None:
    settings_env(ALLOW_LOOPBACK)
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    # When a payload goes out with a caller's header and an attempt to forge the signature's
    result = send_webhook.fn(
        receiver.url_for("/hook"),
        {"event": "paid", "amount": 3},
        headers={"X-Team": "a", SIGNATURE_HEADER: "x"},
    )
    (request, _), *_ = receiver.log
    body, timestamp = request.get_data(), request.headers[TIMESTAMP_HEADER]
    # Then the receiver verifies it with the shared secret, and any change to the body fails
    assert verify_signature(SECRET, timestamp, body, request.headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET, timestamp, body + b" ", request.headers[SIGNATURE_HEADER])
    assert not verify_signature("other", timestamp, body, request.headers[SIGNATURE_HEADER])
    assert not verify_signature(SECRET, str(int(time.time()) - 3600), body, request.headers[SIGNATURE_HEADER])
    assert request.json == {"event": "paid", "amount": 3} and request.headers["X-Team"] == "a"
    assert request.headers["Host"] == f"127.0.0.1:{receiver.port}"
    assert result == {"status": 200, "host": "127.0.0.1"}


def test_statuses_map_to_retry_or_not(receiver: HTTPServer, settings_env: Callable[..., None]) -> None:
    settings_env(ALLOW_LOOPBACK)
    receiver.expect_request("/gone").respond_with_data("no", status=404)
    receiver.expect_request("/busy").respond_with_data("no", status=503)
    receiver.expect_request("/slow-down").respond_with_data("", status=429, headers={"Retry-After": "7"})
    receiver.expect_request("/slow-down-no-hint").respond_with_data("", status=429)
    receiver.expect_request("/moved").respond_with_data(
        "", status=302, headers={"Location": "http://10.0.0.1/"}
    )
    with pytest.raises(PermanentDeliveryError, match=r"HTTP 404 from 127\.0\.0\.1"):
        send_webhook.fn(receiver.url_for("/gone"), {})
    with pytest.raises(TemporaryDeliveryError, match="HTTP 503"):
        send_webhook.fn(receiver.url_for("/busy"), {})
    with pytest.raises(RetryAfter) as asked:
        send_webhook.fn(receiver.url_for("/slow-down"), {})
    assert asked.value.delay == 7000
    with pytest.raises(TemporaryDeliveryError, match="HTTP 429"):
        send_webhook.fn(receiver.url_for("/slow-down-no-hint"), {})
    with pytest.raises(PermanentDeliveryError, match="redirects are not followed"):
        send_webhook.fn(receiver.url_for("/moved"), {})
    with pytest.raises(PermanentDeliveryError, match="HTTP token"):
        send_webhook.fn(receiver.url_for("/gone"), {}, headers={"X-Evil": "a\r\nHost: other"})
    with pytest.raises(PermanentDeliveryError, match="timeout"):
        send_webhook.fn(receiver.url_for("/gone"), {}, timeout=0)
    with pytest.raises(TemporaryDeliveryError, match="ConnectError"):
        send_webhook.fn(f"http://127.0.0.1:{free_port()}/nobody", {})
    assert retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert retry_after("soon") is None and retry_after("-1") is None


def test_ssrf_guard_refuses_private_destinations_unless_allowed(
    receiver: HTTPServer, settings_env: Callable[..., None]
) -> None:
    # Given no allowance for private networks
    settings_env({"CALLBOARD_WEBHOOK_SECRET": SECRET})
    receiver.expect_request("/hook").respond_with_data("ok")
    refused = [
        "http://127.0.0.1/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        f"http://localhost:{receiver.port}/hook",  # a name that resolves to loopback
        "http://0.0.0.0/",
        "file:///etc/passwd",
        "gopher://example.com/",
    ]
    for url in refused:
        with pytest.raises(DestinationRefusedError):
            check_url(url)
    # Then the actor refuses too (never retried), and nothing reaches the server
    with pytest.raises(DestinationRefusedError, match="loopback"):
        send_webhook.fn(receiver.url_for("/hook"), {"x": 1})
    assert receiver.log == []
    # A public address passes, and is the address the request will use
    assert str(check_url("http://8.8.8.8:8080/x").address) == "8.8.8.8"
    # Without a secret nothing is sent either
    settings_env({"CALLBOARD_WEBHOOK_SECRET": "", "CALLBOARD_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"})
    with pytest.raises(ConfigurationError, match="CALLBOARD_WEBHOOK_SECRET"):
        send_webhook.fn(receiver.url_for("/hook"), {})


def test_worker_honours_retry_after_retries_5xx_and_dead_letters_4xx_and_refusals(
    redis_producer: Broker, start_worker: StartWorker, receiver: HTTPServer, migrated_database_url: str
) -> None:
    adopt_actors(webhook_actors, redis_producer)
    worker = start_worker(**ALLOW_LOOPBACK, CALLBOARD_WORKER_IDLE_TIMEOUT="0.05")
    receiver.expect_request("/rate").respond_with_handler(_fail_first(429, {"Retry-After": "1"}))
    receiver.expect_request("/flaky").respond_with_handler(_fail_first(503))
    receiver.expect_request(f"/gone/{PATH_SECRET}").respond_with_data("no", status=404)
    # When the policy's backoff (10 s at least) would be far longer than the Retry-After (1 s)
    send("send_webhook", [receiver.url_for("/rate"), {"n": 1}])
    send("send_webhook", [receiver.url_for("/flaky"), {"n": 2}], min_backoff=100, max_backoff=200)
    send("send_webhook", [receiver.url_for(f"/gone/{PATH_SECRET}"), {"n": 3}])
    send("send_webhook", ["http://10.255.255.1/hook", {"n": 4}])  # private, not allowed
    # Then /rate is retried once after exactly the delay it asked for, and /flaky once
    retried = worker.wait_for_event("message.retried", count=2, timeout=30)
    assert sorted(line["delay_ms"] for line in retried)[-1] == 1000
    wait_until(
        lambda: _hits(receiver, "/rate") == 2 and _hits(receiver, "/flaky") == 2, 30, message="retries"
    )
    # And the 404 and the refused destination are dead letters after one attempt, with the cause
    dead = wait_until(
        lambda: (
            len(rows := store.list_dead(store.Selection(actor="send_webhook"), url=migrated_database_url))
            == 2
            and rows
        ),
        timeout=30,
        message="two dead letters",
    )
    causes = sorted(row["exception"] for row in dead)
    assert all(row["reason"] == "non_retryable" and row["attempts"] == 1 for row in dead)
    assert causes[0].startswith("DestinationRefusedError") and "private" in causes[0]
    assert causes[1] == "PermanentDeliveryError: HTTP 404 from 127.0.0.1"
    assert _hits(receiver, f"/gone/{PATH_SECRET}") == 1
    # And the URL's secret path is in neither the dead letter nor the worker's log
    gone = next(row for row in dead if "404" in row["exception"])
    row = store.get(gone["id"], url=migrated_database_url)
    assert row is not None and row.args is not None and PATH_SECRET not in row.args
    assert PATH_SECRET not in worker.log_path.read_text()


def test_breaker_opens_delays_without_using_retries_and_closes_across_two_workers(
    redis_producer: Broker, start_worker: StartWorker, receiver: HTTPServer
) -> None:
    adopt_actors(webhook_actors, redis_producer)
    up = threading.Event()
    receiver.expect_request("/hook").respond_with_handler(
        lambda request: Response("ok") if up.is_set() else Response("down", status=500)
    )
    env = {
        **ALLOW_LOOPBACK,
        "CALLBOARD_BREAKER_RECOVERY_TIMEOUT": "3",
        "CALLBOARD_WORKER_IDLE_TIMEOUT": "0.05",
    }
    queue_b = f"{QUEUE}_webhooks_b"
    # Given worker A on the webhook queue and worker B on a queue of its own (both run the
    # shipped send_alert, on the critical queue)
    worker_a = start_worker(**env, CALLBOARD_WORKER_QUEUES="external_api,critical")
    worker_b = start_worker(**env, CALLBOARD_WORKER_QUEUES=f"{queue_b},critical")
    url = receiver.url_for("/hook")
    # When five calls fail on worker A
    for n in range(5):
        send("send_webhook", [url, {"n": n}], max_retries=0)
    opened = worker_a.wait_for_event("breaker.opened", timeout=30)
    assert opened[0]["breaker"] == "webhook:127.0.0.1" and _hits(receiver, "/hook") == 5
    # Then a message worker B gets while it is open is delayed, not run, not failed
    send("send_webhook", [url, {"n": "late"}], max_retries=0, queue=queue_b)
    delayed = worker_b.wait_for_event("breaker.delayed", timeout=30)
    assert delayed[0]["state"] == "open" and delayed[0]["attempt"] == 1
    assert _hits(receiver, "/hook") == 5
    up.set()
    # And after the recovery timeout worker B lets it through as the one trial, which closes it
    worker_b.wait_for_event("breaker.closed", timeout=30)
    answered = worker_b.events("webhook.answered")
    assert [(line["status"], line["attempt"]) for line in answered] == [(200, 1)]
    assert worker_b.events("breaker.half_open") and not worker_a.events("breaker.half_open")
    assert _hits(receiver, "/hook") == 6
    # And nothing of it was dead-lettered: only the five that failed with no retries left
    assert not any(
        line.get("message_id") == delayed[0]["message_id"] for line in worker_b.events("message.dead")
    )

    # And each transition sent one alert, from the process that made it
    def alerts() -> list[dict[str, Any]]:
        return [*worker_a.events("alert.sent"), *worker_b.events("alert.sent")]

    wait_until(lambda: len(alerts()) >= 3, 30, message="3 alerts")
    assert sorted(line["alert_level"] for line in alerts()) == ["critical", "info", "info"]
    assert len({line["dedupe_id"] for line in alerts()}) == 3  # one key per transition
    assert opened[0]["alert"] == "sent"


def _fail_first(status: int, headers: dict[str, str] | None = None) -> Callable[[Request], Response]:
    """A handler that answers ``status`` (with ``headers``) once, then 200."""
    calls = itertools.count()

    def handle(request: Request) -> Response:
        return Response("fail", status=status, headers=headers) if next(calls) == 0 else Response("ok")

    return handle


def _hits(server: HTTPServer, path: str) -> int:
    return sum(1 for request, _ in server.log if request.path == path)
