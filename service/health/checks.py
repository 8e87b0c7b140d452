"""The component checks behind ``callboard health`` (and the periodic health-check actor).

:func:`run_checks` reads every component once and returns one :class:`Check` each; :func:`overall`
folds them into one status. Nothing here prints or raises: a dependency that fails or does not
answer yields ``unhealthy`` or ``unknown`` with a one-line reason.

Judgement (``unknown`` counts as ``degraded`` in :func:`overall`):

=================  =========================================  ==========================================
component          degraded                                   unhealthy
=================  =========================================  ==========================================
``broker``         —                                          unreachable within :data:`PROBE_TIMEOUT`
``database``       —                                          unreachable within :data:`PROBE_TIMEOUT`
``workers``        a live worker has threads stuck past       no live worker (no heartbeat within
                   their hard time limit                      ``CALLBOARD_HEARTBEAT_TIMEOUT``)
``scheduler``      no scheduler ever seen (heartbeats kept    schedulers seen but none live (crashed or
                   an hour); leader's last tick older than    stuck); live replicas but no leader for
                   the lease; no leader and none on record    longer than ``CALLBOARD_SCHEDULER_LEASE``
``queue:<name>``   oldest waiting message older than the      oldest waiting message older than twice
                   SLA; messages waiting that no live         the SLA
                   worker consumes (empty ``queues`` = all)
``dead_letters``   any dead letter (state ``dead``) that      more than :data:`DEAD_LETTER_BURST` of
                   failed in the last :data:`DEAD_LETTER_     them in that window
                   WINDOW` seconds
=================  =========================================  ==========================================

``unknown``: the component could not be read — the shared-state Redis is missing (RabbitMQ without
``CALLBOARD_REDIS_URL``) or unreachable, a read timed out, or the component depends on a broker or
database that the probe already found unreachable (it is then not read at all, so a black-holed
server costs one probe timeout, not one per check).

Time: the two probes run together (at most :data:`PROBE_TIMEOUT` + 1 s), then the reads
(heartbeats, queue statistics, dead letters) run together for at most :data:`READ_TIMEOUT`; a read
still running then is abandoned in its daemon thread and reported ``unknown``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import redis
from dramatiq import Broker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy.engine import make_url

from config.queues import QUEUES
from config.settings import Settings
from service.brokers.stats import QueueStats
from service.db.engine import database_url
from service.deadletters import store
from service.health.heartbeats import Beat, beats, live
from service.health.probes import broker_problem, database_problem
from service.state import state_client

Status = Literal["healthy", "degraded", "unhealthy", "unknown"]

HEALTHY: Status = "healthy"
DEGRADED: Status = "degraded"
UNHEALTHY: Status = "unhealthy"
UNKNOWN: Status = "unknown"

#: Seconds each reachability probe (broker, database) may take; they run at the same time.
PROBE_TIMEOUT = 3.0
#: Seconds the reads after the probes (heartbeats, queue statistics, dead letters) may take together.
READ_TIMEOUT = 4.0
#: Dead letters that failed within this many seconds count as new.
DEAD_LETTER_WINDOW = 15 * 60.0
#: More new dead letters than this within the window is unhealthy.
DEAD_LETTER_BURST = 100

_RANK: dict[str, int] = {HEALTHY: 0, UNKNOWN: 1, DEGRADED: 1, UNHEALTHY: 2}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Check:
    """One component's status, a one-line ``detail``, and the figures it was judged on."""

    component: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The flat form printed by ``callboard health --json``."""
        return {"component": self.component, "status": self.status, "detail": self.detail, **self.data}


def overall(checks: Sequence[Check]) -> Status:
    """The worst status of ``checks``: ``healthy``, ``degraded`` (``unknown`` counts so) or
    ``unhealthy``; ``healthy`` when there are none."""
    worst = max((_RANK[check.status] for check in checks), default=0)
    return (HEALTHY, DEGRADED, UNHEALTHY)[worst]


# -- judgement: pure functions of what was read ----------------------------------------------------


def check_broker(problem: str | None, kind: str, elapsed: float) -> Check:
    """The broker, from :func:`service.health.probes.broker_problem`'s answer."""
    if problem is not None:
        return Check("broker", UNHEALTHY, f"{kind} unreachable: {_squeeze(problem)}", {"kind": kind})
    latency = round(elapsed * 1000, 1)
    return Check(
        "broker", HEALTHY, f"{kind} reachable ({latency:g} ms)", {"kind": kind, "latency_ms": latency}
    )


def check_database(problem: str | None, dialect: str, elapsed: float) -> Check:
    """The database, from :func:`service.health.probes.database_problem`'s answer."""
    if problem is not None:
        detail = f"{dialect} unreachable: {_squeeze(problem)}"
        return Check("database", UNHEALTHY, detail, {"dialect": dialect})
    latency = round(elapsed * 1000, 1)
    data = {"dialect": dialect, "latency_ms": latency}
    return Check("database", HEALTHY, f"{dialect} reachable ({latency:g} ms)", data)


def check_workers(found: Sequence[Beat], timeout: float, now: float) -> Check:
    """Worker processes from their heartbeats (``found``: every beat of the last hour)."""
    alive = live(list(found), timeout, now)
    if not alive:
        if found:
            last = max(beat.seen for beat in found)
            detail = f"no live worker: last heartbeat {_ago(now - last)} ago"
            return Check(
                "workers", UNHEALTHY, detail, {"processes": 0, "last_heartbeat_age_s": _age(now, last)}
            )
        return Check("workers", UNHEALTHY, "no worker has sent a heartbeat", {"processes": 0})
    hosts = {beat.host for beat in alive}
    threads = sum(_int(beat.data.get("threads")) for beat in alive)
    busy = sum(_int(beat.data.get("busy")) for beat in alive)
    stuck = sum(_int(beat.data.get("stuck")) for beat in alive)
    consumes_all = any(not beat.data.get("queues") for beat in alive)
    queues = sorted({str(q) for beat in alive for q in beat.data.get("queues") or ()})
    data = {
        "processes": len(alive),
        "hosts": len(hosts),
        "threads": threads,
        "busy": busy,
        "stuck": stuck,
        "queues": "all" if consumes_all else queues,
        "last_heartbeat_age_s": _age(now, max(beat.seen for beat in alive)),
    }
    summary = (
        f"{_plural(len(alive), 'process', 'processes')} on {_plural(len(hosts), 'host')}, "
        f"{threads} threads ({busy} busy)"
    )
    if stuck:
        where = ", ".join(f"{beat.host}:{beat.pid}" for beat in alive if _int(beat.data.get("stuck")))
        detail = f"{_plural(stuck, 'thread')} stuck past the hard time limit ({where}); {summary}"
        return Check("workers", DEGRADED, detail, data)
    shown = "all" if consumes_all else ",".join(queues)
    return Check("workers", HEALTHY, f"{summary}, queues: {shown}", data)


def check_scheduler(found: Sequence[Beat], timeout: float, lease: float, now: float) -> Check:
    """Scheduler replicas from their heartbeats (``found``: every beat of the last hour).

    A beat's ``seen`` is the replica's last main-loop tick; ``data["leader"]`` says whether it
    held the lease then. Of several live beats claiming the lead (a crashed leader's last beat
    stays live until the heartbeat timeout), the one with the highest fencing token leads.
    """
    if not found:
        return Check("scheduler", DEGRADED, "no scheduler seen: periodic work is not sent", {"replicas": 0})
    alive = live(list(found), timeout, now)
    if not alive:
        last = max(beat.seen for beat in found)
        detail = f"no live scheduler: last tick {_ago(now - last)} ago (crashed or stuck)"
        return Check("scheduler", UNHEALTHY, detail, {"replicas": 0, "last_tick_age_s": _age(now, last)})
    data: dict[str, Any] = {"replicas": len(alive), "lease_s": lease}
    leaders = [beat for beat in alive if beat.data.get("leader")]
    if leaders:
        leader = max(leaders, key=lambda beat: (_int(beat.data.get("token")), beat.seen))
        tick = now - leader.seen
        data.update(
            leader=f"{leader.host}:{leader.pid}",
            token=leader.data.get("token"),
            entries=leader.data.get("entries"),
            last_tick_age_s=_age(now, leader.seen),
        )
        if tick > lease:
            detail = f"leader {data['leader']} last ticked {_ago(tick)} ago, longer than its {lease:g}s lease"
            return Check("scheduler", DEGRADED, detail, data)
        standby = len(alive) - 1
        detail = (
            f"leader {data['leader']}, last tick {_ago(tick)} ago, "
            f"{_plural(_int(leader.data.get('entries')), 'entry', 'entries')}, {standby} standby"
        )
        return Check("scheduler", HEALTHY, detail, data)
    led = [beat.seen for beat in found if beat.data.get("leader")]
    if not led:  # a leader that stopped cleanly removes its beat: a hand-over may be under way
        detail = f"no leader among {_plural(len(alive), 'replica')} (none on record)"
        return Check("scheduler", DEGRADED, detail, data)
    leaderless = now - max(led)
    data["leaderless_s"] = round(leaderless, 1)
    if leaderless > lease:
        detail = f"no leader for {_ago(leaderless)} although {_plural(len(alive), 'replica')} run"
        return Check("scheduler", UNHEALTHY, f"{detail} (lease {lease:g}s)", data)
    detail = f"no leader for {_ago(leaderless)}: a standby takes over within the {lease:g}s lease"
    return Check("scheduler", DEGRADED, detail, data)


def check_queue(stats: QueueStats, sla: float | None, consumers: int | None) -> Check:
    """One queue against its SLA; ``consumers`` is how many live workers consume it (``None``:
    workers unknown, not judged)."""
    age = None if stats.oldest_age is None else round(stats.oldest_age, 3)
    data = {
        "queue": stats.queue,
        "waiting": stats.waiting,
        "in_flight": stats.in_flight,
        "delayed": stats.delayed,
        "oldest_age_s": age,
        "sla_s": sla,
        "consumers": consumers,
    }
    status, problems = HEALTHY, []
    if age is not None and sla is not None and age > sla:
        status = UNHEALTHY if age > 2 * sla else DEGRADED
        bound = f"2x SLA {2 * sla:g}s" if status == UNHEALTHY else f"SLA {sla:g}s"
        problems.append(f"oldest waiting {age:.1f}s > {bound}")
    if stats.waiting and consumers == 0:
        status = status if status == UNHEALTHY else DEGRADED
        problems.append("no live worker consumes it")
    shown = [f"{stats.waiting} waiting"]
    if stats.in_flight:
        shown.append(f"{stats.in_flight} in flight")
    if stats.delayed:
        shown.append(f"{stats.delayed} delayed")
    if not problems:
        if age is not None:
            shown.append(f"oldest {age:.1f}s")
        if sla is not None:
            shown.append(f"SLA {sla:g}s")
    return Check(f"queue:{stats.queue}", status, "; ".join([", ".join(shown), *problems]), data)


def check_dead_letters(recent: Sequence[dict[str, Any]], total: int, window: float, burst: int) -> Check:
    """Dead-letter growth: ``recent`` are the dead letters (read at most ``burst + 1``) that failed
    within ``window`` seconds and still wait for an operator; ``total`` all that wait."""
    count = len(recent)
    by_queue: dict[str, int] = {}
    for row in recent:
        by_queue[str(row.get("queue"))] = by_queue.get(str(row.get("queue")), 0) + 1
    data = {"recent": count, "window_s": window, "total_dead": total, "recent_by_queue": by_queue}
    span = _ago(window)
    if count > burst:
        detail = f"more than {burst} new dead letters in {span}; {total} waiting for an operator"
        return Check("dead_letters", UNHEALTHY, detail, data)
    if count:
        queues = ", ".join(f"{queue} {n}" for queue, n in sorted(by_queue.items(), key=lambda kv: -kv[1]))
        detail = f"{_plural(count, 'new dead letter')} in {span} ({queues}); {total} waiting for an operator"
        return Check("dead_letters", DEGRADED, detail, data)
    return Check("dead_letters", HEALTHY, f"none new in {span}; {total} waiting for an operator", data)


# -- reading: bounded in time, in daemon threads ----------------------------------------------------


def run_checks(settings: Settings, broker: Broker, *, now: float | None = None) -> list[Check]:
    """Check every component once: broker, database, workers, scheduler, each queue (the catalogue's,
    then the other queues the loaded actors declare), dead letters. Never raises; bounded in time
    (see the module docstring)."""
    url = database_url(settings)
    kind = _broker_kind(broker)
    broker_probe = _Task(lambda: broker_problem(broker, PROBE_TIMEOUT))
    database_probe = _Task(lambda: database_problem(url, PROBE_TIMEOUT))
    deadline = time.monotonic() + PROBE_TIMEOUT + 1.0
    broker_check = _guarded(
        "broker", lambda: check_broker(broker_probe.wait(deadline), kind, broker_probe.elapsed)
    )
    database_check = _guarded(
        "database",
        lambda: check_database(database_probe.wait(deadline), _dialect(url), database_probe.elapsed),
    )
    broker_up = broker_check.status == HEALTHY
    database_up = database_check.status == HEALTHY

    state, no_state = _state(broker, settings, broker_up)
    names = list(QUEUES) + sorted(set(broker.get_declared_queues()) - set(QUEUES))
    heartbeats_read = _Task(lambda: _read_beats(state)) if state is not None else None
    queues_read = _Task(lambda: _read_queues(broker, names)) if broker_up else None
    dead_read = _Task(lambda: _read_dead_letters(url, now)) if database_up else None
    deadline = time.monotonic() + READ_TIMEOUT
    moment = time.time() if now is None else now

    workers_found: list[Beat] | None = None
    if heartbeats_read is None:
        workers_check = Check("workers", UNKNOWN, no_state)
        scheduler_check = Check("scheduler", UNKNOWN, no_state)
    else:
        try:
            workers_found, schedulers_found = heartbeats_read.wait(deadline)
        except _Failed as error:
            reason = f"shared-state Redis unavailable: {error}"
            workers_check, scheduler_check = (
                Check("workers", UNKNOWN, reason),
                Check("scheduler", UNKNOWN, reason),
            )
        else:
            found = workers_found
            workers_check = _guarded(
                "workers", lambda: check_workers(found, settings.heartbeat_timeout, moment)
            )
            scheduler_check = _guarded(
                "scheduler",
                lambda: check_scheduler(
                    schedulers_found, settings.heartbeat_timeout, settings.scheduler_lease, moment
                ),
            )
    alive = None if workers_found is None else live(workers_found, settings.heartbeat_timeout, moment)

    queue_checks = _queue_checks(queues_read, deadline, alive)
    if dead_read is None:
        dead_check = Check("dead_letters", UNKNOWN, "not checked: database unreachable")
    else:
        try:
            recent, total = dead_read.wait(deadline)
        except _Failed as error:
            dead_check = Check("dead_letters", UNKNOWN, f"dead-letter store unavailable: {error}")
        else:
            dead_check = _guarded(
                "dead_letters",
                lambda: check_dead_letters(recent, total, DEAD_LETTER_WINDOW, DEAD_LETTER_BURST),
            )
    return [broker_check, database_check, workers_check, scheduler_check, *queue_checks, dead_check]


def consumers_of(queue: str, alive: Sequence[Beat]) -> int:
    """How many of the live workers ``alive`` consume ``queue`` (an empty ``queues`` means all)."""
    return sum(1 for beat in alive if not beat.data.get("queues") or queue in beat.data["queues"])


def _queue_checks(
    read: _Task[list[tuple[str, QueueStats | str]]] | None, deadline: float, alive: list[Beat] | None
) -> list[Check]:
    if read is None:
        return [Check("queues", UNKNOWN, "not checked: broker unreachable")]
    try:
        results = read.wait(deadline)
    except _Failed as error:
        return [Check("queues", UNKNOWN, f"queue statistics unavailable: {error}")]
    checks = []
    for name, stats in results:
        if isinstance(stats, str):
            checks.append(Check(f"queue:{name}", UNKNOWN, stats, {"queue": name}))
            continue
        spec = QUEUES.get(name)
        try:
            consumers = None if alive is None else consumers_of(name, alive)
            checks.append(check_queue(stats, spec.sla_seconds if spec else None, consumers))
        except Exception as error:
            checks.append(
                Check(f"queue:{name}", UNKNOWN, f"check failed: {_one_line(error)}", {"queue": name})
            )
    return checks


def _state(broker: Broker, settings: Settings, broker_up: bool) -> tuple[redis.Redis | None, str]:
    try:
        client = state_client(broker, settings)
    except Exception as error:
        return None, f"shared-state Redis unavailable: {_one_line(error)}"
    if client is None:
        return None, "no shared-state Redis: set CALLBOARD_REDIS_URL (the broker is not Redis)"
    if not broker_up and not settings.redis_url:
        return None, "not checked: broker unreachable (it holds the heartbeats)"
    return client, ""


def _read_beats(client: redis.Redis) -> tuple[list[Beat], list[Beat]]:
    pool = client.connection_pool
    kwargs = {
        **pool.connection_kwargs,
        "socket_timeout": READ_TIMEOUT,
        "socket_connect_timeout": READ_TIMEOUT,
    }
    bounded = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    try:
        return beats(bounded, "workers"), beats(bounded, "schedulers")
    finally:
        bounded.close()
        bounded.connection_pool.disconnect()


def _read_queues(broker: Broker, names: Sequence[str]) -> list[tuple[str, QueueStats | str]]:
    stats_of: Callable[[str], QueueStats] | None = getattr(broker, "queue_stats", None)
    if stats_of is None:
        raise RuntimeError("this broker cannot report queue statistics")
    results: list[tuple[str, QueueStats | str]] = []
    try:
        for name in names:
            try:
                results.append((name, stats_of(name)))
            except Exception as error:
                results.append((name, f"queue statistics unavailable: {_one_line(error)}"))
    finally:
        if isinstance(broker, RabbitmqBroker):  # close this thread's connection
            with contextlib.suppress(Exception):
                del broker.connection
    return results


def _read_dead_letters(url: str, now: float | None) -> tuple[list[dict[str, Any]], int]:
    since = datetime.fromtimestamp((time.time() if now is None else now) - DEAD_LETTER_WINDOW, UTC)
    recent = store.list_dead(store.Selection(since=since), limit=DEAD_LETTER_BURST + 1, url=url)
    return recent, store.count_dead(url)


class _Failed(Exception):
    """A bounded task raised or did not finish in time; ``str()`` says which, on one line."""


class _Task(Generic[T]):
    """Run ``function`` now in a daemon thread; :meth:`wait` for its value until a deadline."""

    def __init__(self, function: Callable[[], T]) -> None:
        self._function = function
        self._value: T | None = None
        self._error: str | None = None
        self._started = time.monotonic()
        self.elapsed = 0.0
        self._thread = threading.Thread(target=self._run, name="callboard-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._function()
        except Exception as error:
            self._error = _one_line(error)
        self.elapsed = time.monotonic() - self._started

    def wait(self, deadline: float) -> T:
        """The value, or :class:`_Failed` if ``function`` raised or is still running at ``deadline``."""
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        if self._thread.is_alive():
            raise _Failed(f"timed out after {time.monotonic() - self._started:.1f}s")
        if self._error is not None:
            raise _Failed(self._error)
        return self._value  # type: ignore[return-value]


def _guarded(component: str, judge: Callable[[], Check]) -> Check:
    try:
        return judge()
    except _Failed as error:
        return Check(component, UNKNOWN, str(error))
    except Exception as error:  # a check never raises: an unexpected error is its answer
        return Check(component, UNKNOWN, f"check failed: {_one_line(error)}")


def _broker_kind(broker: Broker) -> str:
    if isinstance(broker, RedisBroker):
        return "redis"
    if isinstance(broker, RabbitmqBroker):
        return "rabbitmq"
    return type(broker).__name__


def _dialect(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception:
        return "database"


def _squeeze(text: str) -> str:
    """The first non-blank line of ``text`` (database errors add lines of SQL and hints)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _one_line(error: BaseException) -> str:
    text = _squeeze(str(error))
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _age(now: float, moment: float) -> float:
    return round(max(now - moment, 0.0), 1)


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
