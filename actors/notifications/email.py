"""``send_email``: one message over SMTP (``email`` policy, circuit breaker ``smtp``).

Settings: ``CALLBOARD_SMTP_HOST``, ``_PORT``, ``_USERNAME``, ``_PASSWORD``, ``_STARTTLS``,
``_SSL`` (implicit TLS; ``_STARTTLS`` is then ignored), ``_FROM``, ``_TIMEOUT`` and ``_CA_FILE``.
TLS always verifies the server's certificate and name.

SMTP replies decide what happens next:
  * 4xx, a dropped connection, a timeout, a TLS or network error: :class:`TemporaryDeliveryError`,
    retried with the policy's backoff, and a failure for the ``smtp`` breaker.
  * 5xx (recipient refused: 550, 553, 554; authentication refused: 535; any other), a server
    without STARTTLS when it is required, a certificate that does not verify, a header that is
    not valid: :class:`PermanentDeliveryError`, dead-lettered at once, not a breaker failure.
  * No ``CALLBOARD_SMTP_HOST``: :class:`ConfigurationError`, dead-lettered at once.

Some recipients refused, others accepted: the message was delivered to those accepted, and a
retry would send it to them twice, so the call succeeds; the result and the ``email.sent`` line
(at WARNING) list the refused ones' hashes. Every recipient refused: permanent when every refusal
is a 5xx, temporary (retried whole) when any is a 4xx.

Addresses never appear in clear in results, logs or exception messages: each is replaced by
:func:`service.redaction.fingerprint`. ``to``, ``cc`` and ``reply_to`` are sensitive parameters,
so their values are also redacted in the dead-letter store and scrubbed from any log line.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from config.settings import Settings, get_settings
from service import actor
from service.errors import ConfigurationError, PermanentDeliveryError, TemporaryDeliveryError
from service.logs import log_event
from service.redaction import fingerprint, sensitive_parameters

logger = logging.getLogger(__name__)

Addresses = str | list[str]

#: Anything shaped like an address in a server's reply text.
_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


@actor(policy="email", circuit_breaker="smtp", throws=(PermanentDeliveryError, ConfigurationError))
@sensitive_parameters("to", "cc", "reply_to")
def send_email(
    to: Addresses,
    subject: str,
    body: str,
    html: str | None = None,
    cc: Addresses | None = None,
    reply_to: str | None = None,
) -> dict[str, Any]:
    """Send one email to ``to`` (and ``cc``): plain ``body``, plus ``html`` as an alternative.

    Returns ``{"message_id", "recipients", "refused"}``, the recipients as hashes. Raises
    :class:`TemporaryDeliveryError` (retried), :class:`PermanentDeliveryError` or
    :class:`ConfigurationError` (dead-lettered at once); see the module's docstring.
    """
    settings = get_settings()
    if not settings.smtp_host:
        raise ConfigurationError("CALLBOARD_SMTP_HOST is not set: send_email cannot deliver")
    recipients = _addresses(to, "to") + _addresses(cc, "cc")
    if not recipients:
        raise PermanentDeliveryError("no recipient: 'to' is empty")
    message = _compose(settings, to, subject, body, html, cc, reply_to)
    try:
        client = _connect(settings)
        try:
            refused = client.send_message(message, settings.smtp_from, recipients)
        finally:
            _quit(client)
    except (smtplib.SMTPException, OSError) as error:
        raise _classify(error) from None
    accepted = [fingerprint(address) for address in recipients if address not in refused]
    result = {
        "message_id": message["Message-ID"],
        "recipients": accepted,
        "refused": [fingerprint(address) for address in refused],
    }
    log_event(
        logger,
        logging.WARNING if refused else logging.INFO,
        "email.sent",
        recipients=accepted,
        refused=result["refused"],
    )
    return result


def _addresses(value: Addresses | None, name: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    for index, item in enumerate(items):
        if not isinstance(item, str) or "@" not in item or any(c in item for c in "\r\n,"):
            raise PermanentDeliveryError(f"{name}[{index}] is not an email address")
    return [item.strip() for item in items]


def _compose(
    settings: Settings,
    to: Addresses,
    subject: str,
    body: str,
    html: str | None,
    cc: Addresses | None,
    reply_to: str | None,
) -> EmailMessage:
    message = EmailMessage()
    try:
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(_addresses(to, "to"))
        if cc:
            message["Cc"] = ", ".join(_addresses(cc, "cc"))
        if reply_to:
            message["Reply-To"] = ", ".join(_addresses(reply_to, "reply_to"))
        message["Subject"] = subject
    except ValueError as error:  # a line break in a header would let the caller add headers
        raise PermanentDeliveryError(f"invalid header: {type(error).__name__}") from None
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=settings.smtp_from.rpartition("@")[2] or None)
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")  # multipart/alternative: text, then HTML
    return message


def _connect(settings: Settings) -> smtplib.SMTP:
    host = settings.smtp_host or ""
    context = ssl.create_default_context(cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None)
    client: smtplib.SMTP
    if settings.smtp_ssl:
        client = smtplib.SMTP_SSL(host, settings.smtp_port, timeout=settings.smtp_timeout, context=context)
    else:
        client = smtplib.SMTP(host, settings.smtp_port, timeout=settings.smtp_timeout)
    try:
        if settings.smtp_starttls and not settings.smtp_ssl:
            client.ehlo()
            if not client.has_extn("starttls"):
                raise PermanentDeliveryError(
                    "the SMTP server does not offer STARTTLS (CALLBOARD_SMTP_STARTTLS=false sends in clear)"
                )
            client.starttls(context=context)
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            client.login(settings.smtp_username, password)
    except BaseException:
        client.close()
        raise
    return client


def _quit(client: smtplib.SMTP) -> None:
    # The message is sent (or failed) by now: a bad QUIT reply must not make it a retry.
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _hide_addresses(text: str) -> str:
    return _ADDRESS.sub(lambda match: fingerprint(match.group(0)), text)


def _classify(error: BaseException) -> Exception:
    """The delivery error an SMTP or network error means (addresses replaced by hashes)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in error.recipients.values()})
        refused = ", ".join(f"{fingerprint(a)} {code}" for a, (code, _) in error.recipients.items())
        text = f"every recipient refused: {refused}"
        return (
            TemporaryDeliveryError(text)
            if any(400 <= c < 500 for c in codes)
            else PermanentDeliveryError(text)
        )
    if isinstance(error, smtplib.SMTPResponseException):
        what = {smtplib.SMTPAuthenticationError: "authentication", smtplib.SMTPSenderRefused: "sender"}.get(
            type(error), "server"
        )
        reply = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else ""
        text = f"SMTP {what} refused: {error.smtp_code} {_hide_addresses(reply)[:200]}".rstrip()
        permanent = 500 <= error.smtp_code < 600
        return PermanentDeliveryError(text) if permanent else TemporaryDeliveryError(text)
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return PermanentDeliveryError(f"SMTP server does not support this: {error}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return PermanentDeliveryError(
            f"SMTP server certificate does not verify ({error.verify_message}); see CALLBOARD_SMTP_CA_FILE"
        )
    return TemporaryDeliveryError(
        f"SMTP connection failed: {type(error).__name__}: {_hide_addresses(str(error))}"[:500]
    )
