"""``send_webhook``: a signed JSON POST (``external_api`` policy, a circuit breaker per host).

The body is ``payload`` as compact JSON; ``X-Callboard-Timestamp`` and ``X-Callboard-Signature:
sha256=<hex>`` sign it with ``CALLBOARD_WEBHOOK_SECRET`` (receivers check it with
:func:`service.signatures.verify_signature`). Before connecting, :func:`service.ssrf.check_url`
resolves the host and refuses private, loopback and link-local addresses unless
``CALLBOARD_WEBHOOK_ALLOWED_NETWORKS`` allows them; the request then goes to the address that was
checked (``Host`` header and TLS server name still carry the host name, and the certificate is
verified against it). Redirects are not followed, and proxy variables from the environment are
ignored, for the same reason.

What the answer means:
  * 2xx: success; returns ``{"status", "host"}``.
  * 429: retried after its ``Retry-After`` (seconds or an HTTP date), at most the policy's
    ``max_backoff``; without the header, after the usual backoff.
  * 5xx, a timeout or a network error: :class:`TemporaryDeliveryError`, retried with backoff.
  * Any other status (4xx, 3xx): :class:`PermanentDeliveryError` with the status, dead-lettered
    at once; so is a refused destination (:class:`DestinationRefusedError`). Neither counts as a
    failure of the host's breaker.

``url`` is a sensitive parameter (webhook URLs often carry their own secret in the path), so it
is redacted in the dead-letter store and logs; errors and the breaker name carry only the host.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from config.settings import get_settings
from service import actor
from service.errors import ConfigurationError, PermanentDeliveryError, TemporaryDeliveryError
from service.logs import log_event
from service.middleware.retries import RetryAfter
from service.redaction import sensitive_parameters
from service.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from service.ssrf import check_url, parse_networks

logger = logging.getLogger(__name__)

#: The longest read timeout a message may ask for, in seconds (the policy's soft limit is 9 min).
MAX_TIMEOUT = 500.0

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: Headers the caller may not set: the signature's, and those the pinned connection needs.
_RESERVED = {
    h.lower() for h in (SIGNATURE_HEADER, TIMESTAMP_HEADER, "host", "content-type", "content-length")
}


def webhook_breaker(args: Sequence[Any], kwargs: dict[str, Any]) -> str | None:
    """The breaker of a ``send_webhook`` message: ``webhook:<host>`` of its URL, or ``None``."""
    url = kwargs.get("url", args[0] if args else None)
    host = urlsplit(url).hostname if isinstance(url, str) else None
    return f"webhook:{host}" if host else None


@actor(
    policy="external_api",
    circuit_breaker=webhook_breaker,
    throws=(PermanentDeliveryError, ConfigurationError),
)
@sensitive_parameters("url")
def send_webhook(
    url: str, payload: Any, headers: dict[str, str] | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """POST ``payload`` as signed JSON to ``url`` (with extra ``headers``; ``timeout`` replaces
    ``CALLBOARD_WEBHOOK_READ_TIMEOUT`` for this call). Returns ``{"status", "host"}``; raises as
    the module's docstring says.
    """
    settings = get_settings()
    if settings.webhook_secret is None:
        raise ConfigurationError("CALLBOARD_WEBHOOK_SECRET is not set: webhooks are signed, none is sent")
    destination = check_url(url, parse_networks(settings.webhook_allowed_networks))
    host = destination.host
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
        raise PermanentDeliveryError(f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    sent_headers = _caller_headers(headers or {})
    default_port = 443 if destination.scheme == "https" else 80
    shown_host = f"[{host}]" if ":" in host else host
    sent_headers |= {
        "Host": shown_host if destination.port == default_port else f"{shown_host}:{destination.port}",
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(settings.webhook_secret.get_secret_value(), timestamp, body),
    }
    limits = httpx.Timeout(timeout or settings.webhook_read_timeout, connect=settings.webhook_connect_timeout)
    extensions = {"sni_hostname": host} if destination.scheme == "https" else {}
    try:
        # A client per call: a pooled connection is keyed by address, and could carry another
        # host name's TLS session.
        with httpx.Client(follow_redirects=False, trust_env=False, timeout=limits) as client:
            response = client.post(
                destination.pinned_url(url), content=body, headers=sent_headers, extensions=extensions
            )
    except httpx.HTTPError as error:
        raise TemporaryDeliveryError(f"POST to {host} failed: {type(error).__name__}") from None
    status = response.status_code
    log_event(logger, logging.INFO, "webhook.answered", host=host, status=status)
    if 200 <= status < 300:
        return {"status": status, "host": host}
    if status == 429:
        delay = retry_after(response.headers.get("Retry-After"))
        if delay is not None:
            raise RetryAfter(f"HTTP 429 from {host}, Retry-After {delay:g} s", delay=int(delay * 1000))
        raise TemporaryDeliveryError(f"HTTP 429 from {host}")
    if status >= 500:
        raise TemporaryDeliveryError(f"HTTP {status} from {host}")
    hint = " (redirects are not followed)" if 300 <= status < 400 else ""
    raise PermanentDeliveryError(f"HTTP {status} from {host}{hint}")


def _caller_headers(headers: dict[str, Any]) -> dict[str, str]:
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name) or any(c in str(value) for c in "\r\n\0"):
            raise PermanentDeliveryError(
                "headers: a name that is not an HTTP token, or a line break in a value"
            )
    return {name: str(value) for name, value in headers.items() if name.lower() not in _RESERVED}


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date, never
    negative), or ``None`` when absent or not understood."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
