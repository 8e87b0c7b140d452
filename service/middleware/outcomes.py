"""How a message's attempt ended, decided in one place for metrics, logs and Sentry.

``success`` (the actor returned), ``retry`` (it failed and a retry is enqueued or the message is
requeued), ``dead`` (it failed for good: dead-lettered), ``expired`` (skipped past its
``max_age``), ``skipped`` (skipped for another reason, such as a duplicate). Read it in an
``after_*`` hook that runs after ``Retries``' (a middleware listed before ``Retries``).
"""

from __future__ import annotations

from typing import Any, Literal

Outcome = Literal["success", "retry", "dead", "expired", "skipped"]

_SKIP = "_callboard_skip"
_DUE = "_callboard_due"


def mark_skipped(message: Any, outcome: Outcome) -> None:
    """Record why ``message`` is about to be skipped (call before raising ``SkipMessage``)."""
    message.__dict__[_SKIP] = outcome


def mark_due(message: Any, eta_ms: int, reason: str) -> None:
    """Record that ``message`` runs again at ``eta_ms`` (epoch milliseconds) because of ``reason``
    (``retry``, ``circuit_breaker``): call once its copy is enqueued with that delay."""
    message.__dict__[_DUE] = (eta_ms, reason)


def due(message: Any) -> tuple[int, str] | None:
    """``(eta_ms, reason)`` set by :func:`mark_due` for this attempt, or ``None``."""
    value: tuple[int, str] | None = message.__dict__.get(_DUE)
    return value


def processed_outcome(message: Any, exception: BaseException | None) -> Outcome:
    """The outcome of an attempt that ran (``after_process_message``)."""
    if exception is None:
        return "success"
    return "dead" if message.failed else "retry"


def skipped_outcome(message: Any) -> Outcome:
    """The outcome of an attempt that was skipped (``after_skip_message``)."""
    outcome: Outcome = message.__dict__.get(_SKIP, "skipped")
    return outcome
