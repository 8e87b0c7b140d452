"""Clear a run marker (:mod:`service.runs`) when a marked message ends for good.

A message carrying the ``run_key`` and ``run_id`` options (the scheduler sets them for
entries with ``overlap = "skip"``) ends for good when it succeeds, dies, or is skipped
(expired); a failure that will be retried keeps the mark. Messages without the option cost one
dictionary lookup.

Options:
  run_key(str): the key whose mark this message holds.
  run_id(str): which run of that key it is.
"""

from __future__ import annotations

import logging
from typing import Any

from dramatiq import Broker, Middleware

from service import runs
from service.logs import log_event

logger = logging.getLogger(__name__)


class RunMarkers(Middleware):
    """Drop the run mark of finished messages that carry ``run_key``."""

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if "run_key" in message.options and (exception is None or message.failed):
            self._clear(message)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        if "run_key" in message.options:
            self._clear(message)

    @staticmethod
    def _clear(message: Any) -> None:
        key = message.options["run_key"]
        try:
            runs.clear(key, message.options.get("run_id", ""))
        except Exception as error:  # the mark expires by itself; never fail the message for it
            log_event(logger, logging.WARNING, "run_marker.clear_failed", key=key, error=str(error))
