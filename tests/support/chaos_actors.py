"""Actors of the chaos suite (loaded with CALLBOARD_ACTOR_MODULES): each run of a message is
counted in the completions ledger under the message's key."""

from __future__ import annotations

import os
import time

from service import actor
from tests.support.completions import complete

PREFIX = os.environ.get("CALLBOARD_TEST_QUEUE_PREFIX", "t")
QUEUE = f"{PREFIX}_chaos"

#: Retries enough to ride out an outage of tens of seconds, quickly.
PATIENT = {"max_retries": 20, "min_backoff": 0.2, "max_backoff": 3.0}


@actor(queue_name=QUEUE, **PATIENT)
def tc_complete(key: str, seconds: float = 0.0) -> None:
    """Work for ``seconds`` (in short sleeps, so time limits and shutdown can interrupt), then
    count the completion of ``key``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
    complete(key)


@actor(queue_name=QUEUE, **PATIENT)
def tc_slot(entry: str) -> None:
    """Count the completion of one scheduled slot of ``entry`` (key ``<entry>@<scheduled_at>``)."""
    from service.logs import message_context

    message = (message_context() or {})["message"]
    complete(f"{entry}@{message.options['scheduled_at']}")
