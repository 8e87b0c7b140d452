"""Webhook signatures: HMAC-SHA256 over ``timestamp + "." + body``, checked by receivers.

A webhook carries ``X-Callboard-Timestamp`` (Unix seconds) and ``X-Callboard-Signature:
sha256=<hex>``. A receiver recomputes the HMAC with the shared secret over the timestamp, a dot
and the raw request body (the bytes, before any JSON parsing), compares in constant time, and
refuses a timestamp too far from its clock (a replayed request).
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Callboard-Timestamp"
SIGNATURE_HEADER = "X-Callboard-Signature"

#: Seconds a receiver accepts between the timestamp and its own clock, either way.
DEFAULT_TOLERANCE = 300.0


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Callboard-Signature`` value for ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` (the header's value) signs ``body`` at ``timestamp`` with ``secret``,
    and ``timestamp`` is within ``tolerance`` seconds of ``now`` (default: the clock)."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
