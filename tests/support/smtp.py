"""A real SMTP server (aiosmtpd) on 127.0.0.1 for the email tests: it keeps what it receives and
answers recipients by their local part: ``reject*`` gets 550, ``later*`` gets 451 on its first
attempt and is accepted after."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.certificates import Certificate
from tests.support.ports import free_port

USER, PASSWORD = "mailer", "s3cret-pass"


@dataclass
class Received:
    """One accepted message: envelope sender, recipients, and the parsed message."""

    sender: str
    recipients: list[str]
    message: Message


@dataclass
class RecordingHandler:
    """aiosmtpd handler that records messages and refuses recipients by their local part."""

    received: list[Received] = field(default_factory=list)
    deferred: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        local = address.split("@", 1)[0]
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        with self.lock:
            if local.startswith("later") and address not in self.deferred:
                self.deferred.add(address)
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
            )
        return "250 Message accepted"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    """A running server: its port and handler."""

    port: int
    handler: RecordingHandler


@contextmanager
def smtp_server(
    mode: str = "plain", certificate: Certificate | None = None, auth: bool = False
) -> Iterator[SmtpServer]:
    """Run an SMTP server on 127.0.0.1: ``plain``, ``starttls`` (STARTTLS required) or ``tls``
    (implicit TLS); with ``auth``, AUTH PLAIN/LOGIN as ``USER``/``PASSWORD`` is required (over
    TLS only). Stopped when the block ends."""
    handler = RecordingHandler()
    options: dict[str, Any] = {}
    if mode == "starttls":
        assert certificate is not None
        options |= {"tls_context": certificate.server_context(), "require_starttls": True}
    elif mode == "tls":
        assert certificate is not None
        options |= {"ssl_context": certificate.server_context()}
    if auth:
        # aiosmtpd sees only STARTTLS as TLS; with implicit TLS every byte is encrypted anyway.
        options |= {"authenticator": _authenticate, "auth_required": True, "auth_require_tls": mode != "tls"}
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield SmtpServer(port, handler)
    finally:
        controller.stop()
