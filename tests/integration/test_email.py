"""send_email against a real SMTP server (aiosmtpd on 127.0.0.1): plain, STARTTLS, implicit TLS,
AUTH over TLS, and the mapping of SMTP replies (550 dead-lettered at once, 451 retried), with
no address in clear in results, logs or the dead-letter store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dramatiq import Broker

from actors.notifications import email as email_actors
from actors.notifications.email import send_email
from config.settings import get_settings
from service import send
from service.deadletters import store
from service.errors import ConfigurationError, PermanentDeliveryError, TemporaryDeliveryError
from service.redaction import fingerprint
from tests.integration.conftest import StartWorker
from tests.support.certificates import Certificate, self_signed
from tests.support.producer import adopt_actors
from tests.support.smtp import PASSWORD, USER, smtp_server
from tests.support.waiting import wait_until

ANN, BOB = "ann@example.com", "bob@example.org"

Configure = Callable[..., None]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configure]:
    """Set CALLBOARD_SMTP_* for direct calls of the actor's function in this process."""

    def apply(**values: object) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"CALLBOARD_SMTP_{key.upper()}", str(value))
        get_settings.cache_clear()

    yield apply


def smtp_env(port: int, **extra: str) -> dict[str, str]:
    return {
        "CALLBOARD_SMTP_HOST": "127.0.0.1",
        "CALLBOARD_SMTP_PORT": str(port),
        "CALLBOARD_SMTP_STARTTLS": "false",
        "CALLBOARD_SMTP_TIMEOUT": "10",
        **extra,
    }


def test_plain_smtp_sends_text_and_html_alternatives(configure: Configure) -> None:
    with smtp_server("plain") as server:
        configure(host="127.0.0.1", port=server.port, starttls="false", **{"from": "app@example.net"})
        # When an email with an HTML alternative goes to one recipient and one cc
        result = send_email.fn(ANN, "Hello", "plain body", html="<p>html body</p>", cc=[BOB])
        # Then the server got one multipart/alternative message for both, from the sender
        (received,) = server.handler.received
    assert received.sender == "app@example.net"
    assert sorted(received.recipients) == sorted([ANN, BOB])
    assert received.message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in received.message.walk()][1:]
    assert parts == ["text/plain", "text/html"]
    assert received.message["Subject"] == "Hello" and received.message["Cc"] == BOB
    # And the result names recipients by hash only
    assert result["recipients"] == [fingerprint(ANN), fingerprint(BOB)] and result["refused"] == []
    assert ANN not in json.dumps(result) and BOB not in json.dumps(result)


def test_starttls_with_auth_verifies_the_server_certificate(
    configure: Configure, certificate: Certificate
) -> None:
    with smtp_server("starttls", certificate, auth=True) as server:
        configure(
            host="127.0.0.1", port=server.port, starttls="true", ca_file=certificate.cert,
            username=USER, password=PASSWORD,
        )  # fmt: skip
        send_email.fn(ANN, "Over STARTTLS", "body")
        assert [r.recipients for r in server.handler.received] == [[ANN]]
        # Without the CA file the self-signed certificate does not verify: permanent, with a hint
        configure(ca_file="")
        with pytest.raises(PermanentDeliveryError, match="CALLBOARD_SMTP_CA_FILE"):
            send_email.fn(ANN, "Unverified", "body")
        assert len(server.handler.received) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_auth_and_a_wrong_password(configure: Configure, certificate: Certificate) -> None:
    with smtp_server("tls", certificate, auth=True) as server:
        configure(
            host="127.0.0.1", port=server.port, ssl="true", ca_file=certificate.cert,
            username=USER, password=PASSWORD,
        )  # fmt: skip
        send_email.fn([ANN], "Over TLS", "body")
        assert [r.recipients for r in server.handler.received] == [[ANN]]
        # A refused login (535) is permanent: retrying with the same password cannot help
        configure(password="wrong")
        with pytest.raises(PermanentDeliveryError, match="authentication refused: 535"):
            send_email.fn(ANN, "Bad login", "body")


def test_starttls_required_but_not_offered_is_refused(configure: Configure) -> None:
    with smtp_server("plain") as server:
        configure(host="127.0.0.1", port=server.port, starttls="true")
        with pytest.raises(PermanentDeliveryError, match="does not offer STARTTLS"):
            send_email.fn(ANN, "Clear text?", "body")
        assert server.handler.received == []


def test_replies_map_to_permanent_or_temporary_without_addresses(configure: Configure) -> None:
    with smtp_server("plain") as server:
        configure(host="127.0.0.1", port=server.port, starttls="false")
        with pytest.raises(PermanentDeliveryError) as permanent:
            send_email.fn("reject@example.com", "No", "body")
        with pytest.raises(TemporaryDeliveryError) as temporary:
            send_email.fn("later@example.com", "Later", "body")
        # A partial refusal delivers to the others and reports the refused one by hash
        result = send_email.fn([ANN, "reject-2@example.com"], "Some", "body")
        assert [r.recipients for r in server.handler.received] == [[ANN]]
    assert "550" in str(permanent.value) and "451" in str(temporary.value)
    for text in (str(permanent.value), str(temporary.value)):
        assert "@" not in text, text
    assert result["refused"] == [fingerprint("reject-2@example.com")]


def test_bad_configuration_and_input_are_not_retryable(configure: Configure) -> None:
    with pytest.raises(ConfigurationError, match="CALLBOARD_SMTP_HOST"):
        send_email.fn(ANN, "Nowhere", "body")
    configure(host="127.0.0.1", port=1)
    with pytest.raises(PermanentDeliveryError, match="invalid header"):
        send_email.fn(ANN, "Subject\nBcc: eve@example.com", "body")
    with pytest.raises(PermanentDeliveryError, match=r"to\[0\] is not an email address"):
        send_email.fn("not-an-address", "x", "body")
    assert send_email.options["throws"] == (PermanentDeliveryError, ConfigurationError)
    assert send_email.options["circuit_breaker"] == "smtp" and send_email.queue_name == "email"


def test_worker_dead_letters_550_at_once_and_retries_451(
    redis_producer: Broker,
    start_worker: StartWorker,
    migrated_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    adopt_actors(email_actors, redis_producer)
    with smtp_server("plain") as server:
        worker = start_worker(**smtp_env(server.port), CALLBOARD_WORKER_IDLE_TIMEOUT="0.05")
        # When one email is refused for good and one for now
        fast = {"min_backoff": 100, "max_backoff": 200}
        send("send_email", ["reject@example.com", "Refused", "body"], **fast)
        send("send_email", ["later@example.com", "Deferred", "body"], **fast)
        # Then the deferred one is delivered on its second attempt
        wait_until(lambda: server.handler.received, timeout=30, message="the deferred email delivered")
        assert [r.recipients for r in server.handler.received] == [["later@example.com"]]
        # And the refused one is dead-lettered after one attempt, with the reply and no address
        dead = wait_until(
            lambda: store.list_dead(store.Selection(actor="send_email"), url=migrated_database_url),
            timeout=30,
            message="a dead letter",
        )
        sent = worker.wait_for_event("email.sent")
    (letter,) = dead
    assert letter["reason"] == "non_retryable" and letter["attempts"] == 1
    assert "PermanentDeliveryError" in letter["exception"] and "550" in letter["exception"]
    row = store.get(letter["id"], url=migrated_database_url)
    assert row is not None and row.args is not None and "reject@" not in row.args
    assert [line["attempt"] for line in worker.events("message.retried")] == [1]
    assert sent[0]["recipients"] == [fingerprint("later@example.com")]
    # And no address appears in clear anywhere in the worker's log
    log = Path(worker.log_path).read_text()
    assert "reject@example.com" not in log and "later@example.com" not in log
