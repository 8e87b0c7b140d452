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
