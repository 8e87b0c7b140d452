"""The scheduler daemon: APScheduler times the entries, the leader sends one message per slot.

* Every replica runs the same APScheduler ``BackgroundScheduler`` (memory job store: nothing is
  pickled, a renamed actor is a validation error, never a silently deleted job). Only the
  replica holding the lease sends; the others keep their timers warm to take over at once.
* A slot is claimed once: :func:`scheduler.state.record_fire` claims ``(entry, slot)`` under a
  unique key before the message is sent. A send that fails is retried by the leader until the
  slot's ``expires`` (:mod:`scheduler.resends`), and a new leader resends claimed slots that have
  no message id (the old one died in between): at-least-once, never silently dropped.
* Catch-up: each pass looks at the slots due since the entry's last handled slot, no older than
  its ``catchup_window``. Slots due within :data:`GRACE` are on time and sent; missed ones follow
  the entry's ``catchup`` policy: ``skip`` none, ``latest`` the newest one, ``all`` each. The same
  pass serves a normal fire, a restart and a takeover.
* Every message carries ``max_age`` (the entry's ``expires``, by default until the next fire),
  ``scheduled_at``, an ``idempotency_key`` ``<entry>:<slot ISO>``, ``schedule_entry`` and a
  ``request_id``.

Instrumenting (in-process prometheus_client values; ``docs/how-to/schedule.md``, Metrics):

* ``callboard_scheduler_fires_total{entry,outcome}``: one per slot handled by this replica, by
  outcome: ``sent``, ``caught_up``, ``skipped_overlap`` (in :meth:`_send` and :meth:`resend_due`,
  only for the replica that claimed the slot), ``send_failed`` (a slot given up at its deadline
  after failed sends) and ``missed`` (in :meth:`_fire_due`: each missed slot
  within the catch-up window that the policy did not send). Paused slots are not counted.
* ``callboard_scheduler_lateness_seconds{entry}``: send time minus slot time of each slot sent
  successfully, caught-up ones included (so a takeover's gap shows in the high buckets).
* ``callboard_scheduler_last_fire_timestamp_seconds{entry}``: Unix time of the last successful
  send (the send time, not the slot time: a caught-up slot counts as a fire now).
* ``callboard_scheduler_entry_interval_seconds{entry}``: enabled entries only; at install the
  trigger's ``interval_hint``, after each successful send the gap from that slot to the next one
  (a weekday cron's Friday fire reports three days), so "no fire for twice the interval since the
  last fire" holds across irregular crons. Removed with its entry on reload.
* ``callboard_scheduler_leader``: 1 while this replica trusts its lease (read at scrape time).
* ``callboard_scheduler_reloads_total{outcome}``: ``ok`` / ``failed``.
* ``callboard_scheduler_tick_timestamp_seconds``: each lease renewal (every main-loop pass, and
  during long catch-up passes); :meth:`SchedulerDaemon.liveness_problems` reads the same tick.
* The broker gauges (:mod:`service.metrics.broker_gauges`), refreshed off the main thread while
  this replica leads and cleared when it does not.
* ``callboard_rescued_total{queue}``: while leading, the replica also runs the rescuer
  (:class:`service.brokers.rescue.Rescuer`, on a thread of its own) every
  ``CALLBOARD_HEARTBEAT_TIMEOUT`` / 2, next to the workers' own passes, and counts what it requeues.

Each lease renewal also hands a heartbeat (role ``schedulers``) to a
:class:`service.health.heartbeats.Publisher`: a slow or unreachable Redis never delays the main loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import random
import signal
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from dramatiq import Broker

from config.policies import DEFAULT_POLICY
from config.settings import Settings
from scheduler import state
from scheduler.resends import Resends, Unsent
from scheduler.schedule import Entry, Schedule, ScheduleError, load_schedule
from scheduler.trigger import Trigger
from service import runs
from service.brokers.rescue import Rescuer
from service.errors import CallboardError
from service.health import heartbeats
from service.logs import log_event
from service.metrics import broker_gauges
from service.metrics.definitions import (
    ENTRY_INTERVAL,
    FIRES,
    LAST_FIRE,
    LATENESS,
    LEADER,
    RELOADS,
    TICK,
)
from service.sending import send
from service.state import state_client

logger = logging.getLogger(__name__)

LEASE_NAME = "scheduler"

#: "No state stored for this entry" (a new entry), as opposed to "not looked up yet".
_UNKNOWN = object()

#: A slot this close to now is on time, not missed (timers and leadership checks take a moment).
GRACE = timedelta(seconds=2)

#: Most slots one pass considers for one entry (an every-second entry with a day's window).
MAX_SLOTS = 10_000

#: Seconds without a lease renewal after which ``/healthz`` fails (at least; see liveness_problems).
MIN_STALL = 10.0


def due_slots(trigger: Trigger, after: datetime, until: datetime) -> list[datetime]:
    """Fire times in ``(after, until]``, oldest first, at most :data:`MAX_SLOTS` (the newest)."""
    slots: list[datetime] = []
    moment = trigger.next_fire(after)
    while moment is not None and moment <= until:
        slots.append(moment)
        if len(slots) > MAX_SLOTS:
            slots.pop(0)
        moment = trigger.next_fire(moment)
    return slots


class _Timer(BaseTrigger):
    """Our trigger as APScheduler's: it only wakes the daemon; the pass decides what to send."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        return self.trigger.next_fire(max(previous_fire_time or now, now - timedelta(microseconds=1)))


class SchedulerDaemon:
    """Hold the schedule, compete for the lease, send what is due; stop on SIGTERM/SIGINT,
    reload on SIGHUP or when the schedule file changes."""

    def __init__(self, settings: Settings, broker: Broker, *, path: Path | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.path = Path(path or settings.schedule_file)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.schedule: Schedule = load_schedule(self.path, broker)  # raises ScheduleError
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic: leadership is trusted until then
        self._started = time.time()
        self._last_tick = time.monotonic()  # the last lease renewal (liveness)
        self._intervals: set[str] = set()  # entries with an interval series
        self._heartbeats = heartbeats.Publisher(state_client(broker, settings), "schedulers")
        self._gauges = broker_gauges.Refresher(broker, settings, self._is_leader)
        self._rescuer = Rescuer(broker, settings.heartbeat_timeout, active=self._is_leader)
        self._resends = Resends()  # claimed slots whose send failed (main loop only)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()  # ends the main loop's wait: stop or SIGHUP
        self._timers = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            executors={"default": {"type": "threadpool", "max_workers": 8}},
        )

    # -- life cycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit code (0)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        for warning in self.schedule.warnings:
            log_event(logger, logging.WARNING, "schedule.warning", warning=warning)
        self._install(self.schedule)
        self._timers.start()
        LEADER.set_function(lambda: 1 if self._is_leader() else 0)
        self._gauges.start()
        self._rescuer.start()
        log_event(
            logger,
            logging.INFO,
            "scheduler.started",
            entries=len(self.schedule.entries),
            holder=self.holder,
            file=str(self.path),
        )
        renew_every = max(self.settings.scheduler_lease / 3, 0.2)
        while not self._stop.is_set():
            self._keep_lease()
            self.resend_due()
            if self._reload.is_set() or self._file_changed():
                self._reload.clear()
                self.reload()
                self._keep_lease()  # a long reload must not outlast the trusted lease
            self._wake.wait(renew_every)
            self._wake.clear()
        self._gauges.stop()  # cleared before the lease goes: no moment with two exporters
        self._rescuer.stop()
        self._timers.shutdown(wait=True)
        if self.token is not None:
            state.release_lease(LEASE_NAME, self.holder)
            self.token = None
        self._heartbeats.close(self.holder)
        log_event(logger, logging.INFO, "scheduler.stopped", holder=self.holder)
        return 0

    def liveness_problems(self) -> list[str]:
        """Why this daemon is stuck, or ``[]``: its main loop renews the lease every lease/3 s,
        so no renewal for three such periods (at least :data:`MIN_STALL` s) means it hangs."""
        limit = max(self.settings.scheduler_lease, MIN_STALL)
        stalled = time.monotonic() - self._last_tick
        if stalled > limit:
            return [f"scheduler main loop stalled: no lease renewal for {stalled:.0f}s (limit {limit:g}s)"]
        return []

    def stop(self) -> None:
        """Ask :meth:`run` to return (from another thread or a signal handler)."""
        self._stop.set()
        self._wake.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self._reload.set()
        self._wake.set()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        log_event(logger, logging.INFO, "scheduler.stopping", signal=signal.Signals(signum).name)
        self.stop()

    def reload(self) -> bool:
        """Load the schedule file again; an invalid file keeps the running schedule."""
        try:
            schedule = load_schedule(self.path, self.broker)
        except (ScheduleError, OSError) as error:
            RELOADS.labels(outcome="failed").inc()
            log_event(logger, logging.ERROR, "schedule.reload_failed", error=str(error))
            # Remember the bad file's digest so it is not reloaded (and logged) again every pass.
            self.schedule = dataclasses.replace(self.schedule, digest=_digest(self.path) or "")
            return False
        RELOADS.labels(outcome="ok").inc()
        self.schedule = schedule
        self._install(schedule)
        log_event(logger, logging.INFO, "schedule.reloaded", entries=len(schedule.entries))
        if self._is_leader():
            self.catch_up()
        return True

    def _file_changed(self) -> bool:
        return _digest(self.path) not in (None, self.schedule.digest)

    def _install(self, schedule: Schedule) -> None:
        self._timers.remove_all_jobs()
        for entry in schedule.entries.values():
            if entry.enabled:
                self._timers.add_job(
                    self.fire_due,
                    _Timer(entry.trigger),
                    args=(entry.name,),
                    id=entry.name,
                    name=entry.name,
                    replace_existing=True,
                )
        enabled = {name for name, entry in schedule.entries.items() if entry.enabled}
        for name in self._intervals - enabled:
            ENTRY_INTERVAL.remove(name)
            LAST_FIRE.remove(name)  # "not fired for long" means nothing for an entry that is gone
        self._intervals = set()
        for name in enabled:
            self._set_interval(name, schedule.entries[name].trigger.interval_hint)
        self._restore_last_fires(sorted(enabled))

    def _restore_last_fires(self, names: list[str]) -> None:
        # From the history, so "has not fired for 2x its interval" holds across restarts and on
        # standbys, not only for slots this process sent.
        try:
            found = state.last_sent(names)
        except Exception as error:  # the database may be down: the gauges fill in as slots are sent
            log_event(
                logger,
                logging.WARNING,
                "scheduler.history_unavailable",
                error=f"{type(error).__name__}: {error}",
            )
            return
        for name, sent_at in found.items():
            LAST_FIRE.labels(entry=name).set(sent_at.timestamp())

    def _set_interval(self, name: str, seconds: float) -> None:
        if math.isfinite(seconds):
            ENTRY_INTERVAL.labels(entry=name).set(seconds)
            self._intervals.add(name)

    # -- leadership -------------------------------------------------------------------------

    def _keep_lease(self, *, catch_up: bool = True) -> None:
        ttl = self.settings.scheduler_lease
        started = time.monotonic()
        try:
            token = state.acquire_lease(LEASE_NAME, self.holder, ttl)
        except Exception as error:  # database unreachable: we cannot know, so we must not lead
            token = None
            log_event(
                logger, logging.ERROR, "scheduler.lease_error", error=f"{type(error).__name__}: {error}"
            )
        was_leader = self.token is not None
        self.token = token
        # Trust the lease for less than its length, so we stop before a standby may take over.
        self._valid_until = started + ttl * 0.8 if token is not None else 0.0
        self._tick()
        if token is not None and not was_leader:
            log_event(logger, logging.INFO, "scheduler.leader", holder=self.holder, token=token)
            self._load_unsent()
            if catch_up:
                self.catch_up()
        elif token is None and was_leader:
            self._resends.clear()  # the next leader loads them from the history
            broker_gauges.clear()  # at once: the new leader may export them already
            log_event(logger, logging.WARNING, "scheduler.lost_lease", holder=self.holder)

    def _tick(self) -> None:
        """The main loop (or a long pass) made progress: liveness, the tick gauge, a heartbeat."""
        self._last_tick = time.monotonic()
        TICK.set(time.time())
        beat = heartbeats.Beat(
            id=self.holder,
            data={"leader": self._is_leader(), "token": self.token, "entries": len(self.schedule.entries)},
            started=self._started,
        )
        self._heartbeats.offer(beat)

    def _is_leader(self) -> bool:
        return self.token is not None and time.monotonic() < self._valid_until

    # -- sending ----------------------------------------------------------------------------

    def catch_up(self) -> None:
        """One pass over every enabled entry (on taking the lead and after a reload), reading
        their stored state in one query; the lease is renewed as the pass goes on."""
        known = state.entry_states()
        renewed = time.monotonic()
        for entry in list(self.schedule.entries.values()):
            if entry.enabled:
                self.fire_due(entry.name, known=known.get(entry.name, _UNKNOWN))
            if time.monotonic() - renewed > self.settings.scheduler_lease / 3:
                self._keep_lease(catch_up=False)
                renewed = time.monotonic()

    def fire_due(self, name: str, known: state.EntryView | object | None = None) -> None:
        """Send what is due for entry ``name`` (the timers call this at each fire time)."""
        entry = self.schedule.entries.get(name)
        if entry is None or not self._is_leader():
            return
        try:
            if known is None:
                known = state.entry_states([name]).get(name, _UNKNOWN)
            self._fire_due(entry, datetime.now(UTC), None if known is _UNKNOWN else known)  # type: ignore[arg-type]
        except Exception as error:  # one entry's failure must not stop the timers
            log_event(
                logger,
                logging.ERROR,
                "schedule.fire_failed",
                entry=name,
                error=f"{type(error).__name__}: {error}",
            )

    def _fire_due(self, entry: Entry, now: datetime, known: state.EntryView | None) -> None:
        window_start = now - timedelta(seconds=entry.catchup_window)
        if known is None or known.last_slot is None:
            after = now - GRACE  # a new entry has missed nothing
        else:
            after = max(known.last_slot, window_start)
        slots = due_slots(entry.trigger, after, now)
        if not slots:
            return
        if known is not None and known.paused:
            state.advance(entry.name, slots[-1], "paused")  # paused slots are skipped, not missed
            return
        on_time = [slot for slot in slots if now - slot <= GRACE]
        missed = [slot for slot in slots if now - slot > GRACE]
        # On-time slots are always sent; the policy decides about missed ones.
        if entry.catchup == "all":
            chosen = slots
        elif entry.catchup == "latest":
            chosen = missed[-1:] + on_time
        else:
            chosen = on_time
        if missed and chosen != slots:
            log_event(
                logger,
                logging.WARNING,
                "schedule.missed",
                entry=entry.name,
                count=len(missed),
                catchup=entry.catchup,
            )
        if missed:
            sending = set(chosen)
            unsent = sum(1 for slot in missed if slot not in sending)
            if unsent:
                FIRES.labels(entry=entry.name, outcome="missed").inc(unsent)
        for slot in chosen:
            self._send(entry, slot, "sent" if slot in on_time else "caught_up")
        if not chosen:
            state.advance(entry.name, slots[-1], "missed")

    def _send(self, entry: Entry, slot: datetime, outcome: str) -> None:
        token = self.token
        if token is None or not self._is_leader():
            return
        if entry.overlap == "skip" and runs.is_running(entry.name):
            if state.record_fire(entry.name, slot, "skipped_overlap", token):
                FIRES.labels(entry=entry.name, outcome="skipped_overlap").inc()
                log_event(
                    logger, logging.INFO, "schedule.skipped_overlap", entry=entry.name, slot=slot.isoformat()
                )
            return
        if not state.record_fire(entry.name, slot, outcome, token):
            return  # another replica handled this slot
        message_id = send_entry(entry, slot, self.settings, broker=self.broker, send_timeout=0)
        if message_id is None:
            state.set_fire_result(entry.name, slot, "send_failed", None)
            # The main loop tries again (resend_due) until the slot's deadline.
            self._resends.add(Unsent(entry.name, slot, deadline=slot + timedelta(seconds=expiry(entry))))
            return
        self._sent(entry, slot, outcome, message_id)

    def _sent(self, entry: Entry, slot: datetime, outcome: str, message_id: str) -> None:
        now = datetime.now(UTC)
        self._count_fire(entry, slot, outcome, now)
        state.set_fire_result(entry.name, slot, outcome, message_id)
        log_event(
            logger,
            logging.INFO,
            "schedule.fired",
            entry=entry.name,
            slot=slot.isoformat(),
            outcome=outcome,
            message_id=message_id,
            lateness_ms=round((now - slot).total_seconds() * 1000, 1),
        )

    def _load_unsent(self) -> None:
        """On taking the lead: claimed slots without a message id, within their deadline, wait
        for a send (see :mod:`scheduler.resends`)."""
        now = datetime.now(UTC)
        longest = max((expiry(e) for e in self.schedule.entries.values()), default=0.0)
        try:
            unsent = state.unsent_fires(now - timedelta(seconds=longest))
        except Exception as error:  # the database: the next takeover tries again
            log_event(logger, logging.ERROR, "schedule.fire_failed", error=f"{type(error).__name__}: {error}")
            return
        for name, slot in unsent:
            entry = self.schedule.entries.get(name)
            if entry is not None and slot + timedelta(seconds=expiry(entry)) > now:
                deadline = slot + timedelta(seconds=expiry(entry))
                self._resends.add(Unsent(name, slot, deadline=deadline), at_once=True)

    def resend_due(self) -> None:
        """Try again the claimed slots whose send failed and whose pause is over; give up a slot
        past its deadline (``schedule.send_abandoned``, counted as ``send_failed``)."""
        for unsent in self._resends.due():
            if not self._is_leader():
                return
            entry = self.schedule.entries.get(unsent.entry)
            now = datetime.now(UTC)
            if entry is None or now > unsent.deadline:
                self._resends.done(unsent)
                FIRES.labels(entry=unsent.entry, outcome="send_failed").inc()
                log_event(
                    logger,
                    logging.ERROR,
                    "schedule.send_abandoned",
                    entry=unsent.entry,
                    slot=unsent.slot.isoformat(),
                    attempts=unsent.attempts + 1,
                )
                continue
            message_id = send_entry(entry, unsent.slot, self.settings, broker=self.broker, send_timeout=0)
            if message_id is None:
                self._resends.failed(unsent)
                continue
            self._resends.done(unsent)
            self._sent(entry, unsent.slot, "sent" if now - unsent.slot <= GRACE else "caught_up", message_id)

    def _count_fire(self, entry: Entry, slot: datetime, outcome: str, sent_at: datetime) -> None:
        FIRES.labels(entry=entry.name, outcome=outcome).inc()
        LATENESS.labels(entry=entry.name).observe(max((sent_at - slot).total_seconds(), 0.0))
        LAST_FIRE.labels(entry=entry.name).set(sent_at.timestamp())
        following = entry.trigger.next_fire(slot)
        if following is not None and entry.name in self.schedule.entries:
            self._set_interval(entry.name, (following - slot).total_seconds())


def run_ttl(entry: Entry, broker: Broker, expires: float) -> float:
    """How long an entry's run can last at most: waiting (``expires``), then every attempt up to
    its hard time limit, with the longest backoffs between them. An overlap mark outlives no more."""
    options = broker.get_actor(entry.actor).options
    retries = options.get("max_retries", DEFAULT_POLICY.max_retries)
    hard = options.get("time_limit", DEFAULT_POLICY.time_limit * 1000) / 1000
    backoff = options.get("max_backoff", DEFAULT_POLICY.max_backoff * 1000) / 1000
    return expires + hard * (retries + 1) + backoff * retries


def expiry(entry: Entry) -> float:
    """Seconds a slot's message stays valid: the entry's ``expires``, by default until the next
    fire (at least a second). A slot whose send fails is retried for as long."""
    return entry.expires if entry.expires is not None else max(entry.trigger.interval_hint, 1.0)


def send_entry(
    entry: Entry,
    slot: datetime,
    settings: Settings,
    *,
    broker: Broker,
    manual: bool = False,
    send_timeout: float | None = None,
) -> str | None:
    """Send one message for ``slot`` of ``entry``; returns its id, or ``None`` if the broker
    refused it (logged). An ``overlap = "skip"`` entry's run is marked before it is sent.
    ``send_timeout``: how long to retry an unreachable broker (default ``CALLBOARD_SEND_TIMEOUT``)."""
    expires = expiry(entry)
    slot_iso = slot.isoformat()
    run_id = f"{entry.name}:{slot_iso}" + (":manual" if manual else "")
    options: dict[str, Any] = {
        "max_age": int(expires * 1000),  # from the send: a caught-up slot gets its full time too
        "scheduled_at": slot_iso,
        "idempotency_key": run_id,
        "schedule_entry": entry.name,
    }
    marked = entry.overlap == "skip" and not manual  # a manual run must not replace a real run's mark
    if marked:
        options.update(run_key=entry.name, run_id=run_id)
        runs.mark(entry.name, run_id, run_ttl(entry, broker, expires))
    delay = random.uniform(0, entry.jitter) if entry.jitter and not manual else None
    try:
        return send(
            entry.actor,
            entry.args,
            entry.kwargs,
            queue=entry.queue,
            delay=delay,
            request_id=f"schedule-{uuid.uuid4().hex}",
            send_timeout=send_timeout,
            **options,
        )
    except CallboardError as error:
        if marked:
            runs.clear(entry.name, run_id)  # nothing runs: the entry must not look busy
        log_event(
            logger, logging.ERROR, "schedule.send_failed", entry=entry.name, slot=slot_iso, error=str(error)
        )
        return None


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
