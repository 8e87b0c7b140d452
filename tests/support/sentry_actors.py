"""Actors for the Sentry tests (loaded with CALLBOARD_ACTOR_MODULES next to ``tests.support.actors``).

They fail with sensitive values everywhere Sentry looks: in their arguments, their exception
messages and their local variables.
"""

from __future__ import annotations

import logging

from service import actor
from tests.support.actors import QUEUE
from tests.support.records import client, record

logger = logging.getLogger(__name__)

#: Two retries after the first attempt, with tiny backoff: three attempts within a second.
QUICK = {"max_retries": 2, "min_backoff": 0.05, "max_backoff": 0.2}


@actor(queue_name=QUEUE, **QUICK)
def tb_sentry_leak(tag: str, email: str, password: str, token: str) -> None:
    """Fail every time, with the secrets in the exception message and in local variables."""
    record(tag, "attempt")
    profile = {"user_email": email, "api_token": token}  # sensitive keys
    note = f"mail for {email} with {password} via {token}"  # a name that says nothing
    raise ValueError(f"bad address {email} (password {password}, token {token}); {note} {len(profile)}")


@actor(queue_name=QUEUE, **QUICK)
def tb_sentry_flaky(tag: str, email: str) -> None:
    """Fail on the first attempt only: retried, then done, so never a dead letter."""
    runs = client().incr(f"runs:{tag}")
    record(tag, "attempt", runs=runs)
    if runs == 1:
        raise RuntimeError(f"transient failure for {email}")
    record(tag, "done")


@actor(queue_name=QUEUE, max_retries=0)
def tb_sentry_logs(tag: str, email: str) -> None:
    """Succeed, but log an ERROR naming the address (an actor's own error report)."""
    logger.error("could not reach %s, carrying on", email)
    record(tag, "done")


@actor(queue_name=QUEUE, throws=(PermissionError,), max_retries=5)
def tb_sentry_refused(tag: str, email: str) -> None:
    """Raise a non-retryable exception (in ``throws``): dead-lettered at once."""
    record(tag, "attempt")
    raise PermissionError(f"{email} may not receive this")
