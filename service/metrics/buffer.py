"""A per-process buffer for the hot per-message metrics, written through about once a second.

In multiprocess mode every counter increment or histogram observation is a locked write to an
mmap file (about 1-2 us each); three of them per message were most of what metrics cost a no-op
message. The buffer takes them as in-memory additions under one lock and :meth:`flush` applies
the sums: one write per series per second instead of one per message.

What it costs: values reach ``/metrics`` up to a flush interval late, and a process killed with
SIGKILL loses at most its last interval of counts (its messages run again elsewhere and are
counted there). A process that stops cleanly flushes first, so totals stay exact.

It reads prometheus_client's histogram children's ``_upper_bounds``, ``_buckets`` and ``_sum``
(stable since 0.4); ``tests/unit/test_metric_buffer.py`` checks the result against ``observe``.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import Any


class MetricBuffer:
    """Additions to counter children and observations of histogram children, applied by flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._increments: defaultdict[Any, float] = defaultdict(float)
        self._observations: dict[Any, list[float]] = {}  # child -> [count per bucket..., sum]

    def inc(self, counter: Any, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter child (labelled) at the next flush."""
        with self._lock:
            self._increments[counter] += amount

    def observe(self, histogram: Any, value: float) -> None:
        """Observe ``value`` in a histogram child (labelled) at the next flush."""
        index = bisect.bisect_left(histogram._upper_bounds, value)  # the first bound >= value
        with self._lock:
            pending = self._observations.get(histogram)
            if pending is None:
                pending = self._observations[histogram] = [0.0] * (len(histogram._upper_bounds) + 1)
            pending[index] += 1
            pending[-1] += value

    def flush(self) -> None:
        """Apply everything buffered so far to the metrics (one write per touched value)."""
        with self._lock:
            increments, self._increments = self._increments, defaultdict(float)
            observations, self._observations = self._observations, {}
        for counter, amount in increments.items():
            counter.inc(amount)
        for histogram, pending in observations.items():
            histogram._sum.inc(pending[-1])
            for index, count in enumerate(pending[:-1]):
                if count:
                    histogram._buckets[index].inc(count)


#: The buffer of this process: the Metrics middleware writes to it, the worker's heartbeat
#: thread flushes it every second, and the worker flushes it once more when it stops.
PROCESS_BUFFER = MetricBuffer()
