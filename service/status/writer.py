"""A worker process's status writes: gathered in memory, sent in one pipeline per interval.

A synchronous write per transition would cost two Redis round trips per message (``started``,
then how it ended), most of a no-op message's own cost. Instead each transition replaces the
message's pending record in memory (a dictionary store under a lock), and a thread of the
writer's own sends everything pending every ``interval`` seconds in one pipelined round trip: one
script call per 1,000 records that sets each (``SET ... PX ttl``; a message that starts and ends
within one interval is set once), plus one ``HINCRBY`` per group and outcome. Progress reports go
the same way, so a tight loop of ``progress()`` calls costs Redis at most one write per interval.

Producers write ``enqueued`` / ``delayed`` the same way, as set-if-absent (``NX``): a worker's
record of the same message, whenever it lands, is never overwritten by a late producer flush.

What a crash can lose: a process killed with SIGKILL loses the changes of its last ``interval``
(0.1 s by default). Its messages are not lost (they run again, and write again); a message that
succeeded in that window keeps showing its previous state (usually ``started``) until
``CALLBOARD_STATUS_TTL`` runs out. A clean stop flushes. A write that fails (Redis unreachable)
is logged as ``status.write_failed`` and dropped: status never fails or delays a message.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import redis

from service.logs import log_event
from service.status.records import PREFIX, group_key, new_record

logger = logging.getLogger(__name__)

#: Records per script call (a call runs atomically in Redis: keep each one short).
CHUNK = 1000

#: ARGV[1]: TTL in ms; ARGV[2]: the key prefix; ARGV[3]: one line per record,
#: ``<nx|set>\t<message id>\t<JSON>`` (JSON escapes tabs and newlines). One argument instead of
#: three per record: packing arguments is most of a write's client-side cost. The keys are built
#: in the script, so this does not run on a Redis Cluster (the state Redis is one server).
_SET_RECORDS = """
local ttl, prefix = ARGV[1], ARGV[2]
local count = 0
for line in string.gmatch(ARGV[3], "[^\\n]+") do
    local mode, id, value = string.match(line, "^(%a+)\\t([^\\t]+)\\t(.*)$")
    if mode == "nx" then
        redis.call("set", prefix .. id, value, "PX", ttl, "NX")
    else
        redis.call("set", prefix .. id, value, "PX", ttl)
    end
    count = count + 1
end
return count
"""


class Snapshot(Protocol):
    """A running attempt, as :meth:`StatusWriter.report` takes it."""

    @property
    def message_id(self) -> str:
        """The message's id."""

    def snapshot(self) -> dict[str, Any]:
        """Its record as it stands now."""


_writers: weakref.WeakSet[StatusWriter] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    # A producer that sends and exits (``callboard send``) still writes what it sent.
    for writer in list(_writers):
        writer.flush()


def _after_fork() -> None:
    for writer in list(_writers):
        writer._forget_thread()


os.register_at_fork(after_in_child=_after_fork)


class StatusWriter:
    """Pending status records and group counts of one process, flushed by a thread.

    Parameters:
      client(redis.Redis): the state Redis.
      ttl(float): seconds a record is kept after its last write.
      interval(float): seconds between flushes while something is pending.
    """

    def __init__(self, client: redis.Redis, *, ttl: float, interval: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl * 1000)
        self.interval = interval
        #: Records and group increments sent so far (for tests and benchmarks).
        self.writes = 0
        # Pending records by message id, as the script's lines (``<nx|set>\t<id>\t<JSON>``):
        # encoded when they are handed over, so they are never shared with the caller.
        self._records: dict[str, str] = {}
        # Running attempts that reported progress since the last flush, by message id: kept
        # without a lock (one dictionary store, atomic under the GIL), and written by the next
        # flush unless the attempt's end comes first (a tight progress loop writes once a flush).
        self._reports: dict[str, Snapshot] = {}
        self._groups: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # The running attempts to write ``started`` for (see watch), those seen so far, and
        # whether any was running at the last flush (the thread then looks again).
        self._running: Callable[[], Iterable[Any]] | None = None
        self._seen: set[tuple[str, int]] = set()
        self._polling = False
        # Set with ``_wake``, cleared by the thread just before it gathers: a plain attribute
        # read spares each change the event's method call once the thread has been woken.
        self._nudged = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._script = client.register_script(_SET_RECORDS)
        _writers.add(self)

    def put(self, record: dict[str, Any], *, only_if_new: bool = False) -> None:
        """Write ``record`` (a complete record, encoded now) at the next flush; with
        ``only_if_new``, only if the message has no record yet (a producer's ``enqueued``)."""
        message_id = record["message_id"]
        line = f"{'nx' if only_if_new else 'set'}\t{message_id}\t{json.dumps(record)}"
        with self._lock:
            if only_if_new and message_id in self._records:
                return
            self._records[message_id] = line
        self._nudge()

    def report(self, attempt: Snapshot) -> None:
        """Note that a running attempt changed (a progress report): its
        :meth:`Snapshot.snapshot` is written at the next flush unless :meth:`end` comes first."""
        self._reports[attempt.message_id] = attempt
        if not self._nudged:
            self._nudge()

    def end(self, message_id: str, record: str) -> None:
        """Write ``record`` (JSON text), the last state of ``message_id``'s attempt, at the next
        flush, after anything noted for it before."""
        self._reports.pop(message_id, None)
        line = f"set\t{message_id}\t{record}"
        with self._lock:
            self._records[message_id] = line
        if not self._nudged:
            self._nudge()

    def count(self, group_id: str, field: str) -> None:
        """Add one to ``field`` (``done`` or ``failed``) of group ``group_id`` at the next flush."""
        with self._lock:
            self._groups[(group_id, field)] += 1
        self._nudge()

    def flush(self) -> None:
        """Send everything pending now, in one pipelined round trip (the thread calls this)."""
        # Started records first: an attempt that ends meanwhile has its end in ``records`` (taken
        # after), so the end is written after its start, or in the next flush. (An attempt leaves
        # the watched messages before its end is handed over: see watch.)
        started = self._newly_running()
        for message_id in list(self._reports):
            attempt = self._reports.pop(message_id, None)
            if attempt is not None:
                started.append(f"set\t{message_id}\t{json.dumps(attempt.snapshot())}")
        with self._lock:
            records, self._records = self._records, {}
            groups, self._groups = self._groups, Counter()
        if not records and not groups and not started:
            return
        pipe = self.client.pipeline(transaction=False)
        lines = started + list(records.values())
        for start in range(0, len(lines), CHUNK):
            chunk = "\n".join(lines[start : start + CHUNK])
            self._script(keys=[], args=[self.ttl_ms, PREFIX, chunk], client=pipe)
        for (group_id, field), amount in groups.items():
            pipe.hincrby(group_key(group_id), field, amount)
            pipe.pexpire(group_key(group_id), self.ttl_ms)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as error:
            if not self._failing:  # once per outage, not once per flush
                log_event(logger, logging.WARNING, "status.write_failed", error=str(error)[:300])
            self._failing = True
            return
        self._failing = False
        self.writes += len(lines) + len(groups)

    def close(self) -> None:
        """Flush what is pending and stop the thread (a clean worker stop)."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None  # a later change starts a new thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()

    def watch(self, running: Callable[[], Iterable[Any]]) -> None:
        """Write a ``started`` record for each attempt that ``running()`` (the messages running
        in this process, whose status is tracked) shows, once, at the first flush that sees it:
        within ``interval`` of its start, with no cost for the many attempts that end sooner.

        An attempt must leave ``running()`` before its end is handed to :meth:`end`. The thread
        looks every ``interval`` while ``running()`` shows attempts; once it shows none, it sleeps
        until :meth:`notice` (a message started in an idle process) or another change wakes it.
        """
        self._running = running

    def notice(self) -> None:
        """A message started while none ran: look at the running messages within ``interval``."""
        if not self._nudged:
            self._nudge()

    def _newly_running(self) -> list[str]:
        if self._running is None:
            return []
        lines, seen = [], set()
        for message in self._running():
            attempt = (message.message_id, message.options.get("retries", 0))
            seen.add(attempt)
            if attempt not in self._seen:
                lines.append(f"set\t{attempt[0]}\t{json.dumps(new_record(message))}")
        self._seen = seen
        self._polling = bool(seen)
        return lines

    def _nudge(self) -> None:
        if self._thread is None:
            self._start()
        self._nudged = True
        self._wake.set()

    def _forget_thread(self) -> None:
        # In a forked child the parent's thread does not exist: start one on the next change.
        self._thread = None
        self._nudged = False
        self._seen, self._polling = set(), False
        self._records, self._groups, self._reports = {}, Counter(), {}
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="callboard-status", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # Sleeps until something is pending (no cost while idle), then gathers for one interval;
        # while watched attempts run, it looks every interval.
        while not self._stopping.is_set():
            if not self._polling:
                self._wake.wait()
            self._stopping.wait(self.interval)
            # Cleared before gathering, the event first: a change stored from here on either
            # lands before the flush takes the pending records, or sees ``_nudged`` false and
            # sets the event again, so the thread wakes for it.
            self._wake.clear()
            self._nudged = False
            try:
                self.flush()
            except Exception:  # the thread must outlive one bad flush
                logger.exception("status flush failed")
