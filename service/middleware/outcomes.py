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


def mark_skipped(message: Any, outcome: Outcome) -> None:
    """Record why ``message`` is about to be skipped (call before raising ``SkipMessage``)."""
    message.__dict__[_SKIP] = outcome


def processed_outcome(message: Any, exception: BaseException | None) -> Outcome:
    """The outcome of an attempt that ran (``after_process_message``)."""
    if exception is None:
        return "success"
    return "dead" if message.failed else "retry"


def skipped_outcome(message: Any) -> Outcome:
    """The outcome of an attempt that was skipped (``after_skip_message``)."""
    outcome: Outcome = message.__dict__.get(_SKIP, "skipped")
    return outcome
