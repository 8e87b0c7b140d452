"""Recycle a worker process after a number of messages (the cure for slowly leaking actors).

The middleware only counts; the process runner (:mod:`service.worker.process`) registers
``on_limit`` and then stops the worker gracefully, which hands back prefetched messages, and the
supervisor starts a fresh process. Under the stock ``dramatiq`` command no runner registers, so
the count has no effect there.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from dramatiq import Broker, Middleware


class Recycle(Middleware):
    """Call ``on_limit`` once after ``max_messages`` messages (0 disables).

    Parameters:
      max_messages(int): the number of processed or skipped messages before recycling.
    """

    def __init__(self, *, max_messages: int) -> None:
        self.max_messages = max_messages
        self.on_limit: Callable[[], None] | None = None
        self._count = itertools.count(1)
        self._fired = threading.Event()

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        # itertools.count is atomic under the GIL: no lock on the hot path.
        if next(self._count) >= self.max_messages > 0 and not self._fired.is_set():
            self._fired.set()
            if self.on_limit is not None:
                self.on_limit()

    after_skip_message = after_process_message
