"""Every metric Callboard exports, in one place (``docs/reference/metrics.md`` is its twin).

Labels are ``queue``, ``actor``, ``entry``, ``outcome``, ``reason``, ``kind``, ``level``,
``breaker`` (a breaker's family) and ``state`` only: never a message id, an address or user data,
so the number of series is bounded by the code's own names. Worker processes write through
prometheus_client's multiprocess mode (see :mod:`service.metrics.multiprocess`); gauges there use
``live*`` modes so a dead process's values disappear instead of piling up. The scheduler is one
process and uses the in-process values.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from config.queues import QUEUES

#: Outcomes of ``callboard_messages_total``.
OUTCOMES = ("success", "retry", "dead", "expired", "skipped")

#: Seconds: fine steps for quick actors, then up to the longest hard limit (30 min).
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
)  # fmt: skip


def wait_buckets() -> tuple[float, ...]:
    """Queue-wait buckets: a fixed ladder plus every queue's SLA, so "waited longer than the SLA"
    is an exact bucket boundary (``le="<sla>"``) and never an interpolation."""
    ladder = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
    return tuple(sorted(ladder | {float(spec.sla_seconds) for spec in QUEUES.values()}))


#: Seconds late a scheduled fire was sent (slot time → send).
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)

# -- worker processes ------------------------------------------------------------------------

MESSAGES = Counter(
    "callboard_messages",
    "Messages processed, by how their attempt ended (success, retry, dead, expired, skipped).",
    ["queue", "actor", "outcome"],
)
DURATION = Histogram(
    "callboard_message_duration_seconds",
    "Time an actor ran, per attempt (skipped messages are not observed).",
    ["queue", "actor"],
    buckets=DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "callboard_queue_wait_seconds",
    "Time from enqueue (or from the due time of a delayed message) to start.",
    ["queue"],
    buckets=wait_buckets(),
)
IN_PROGRESS = Gauge(
    "callboard_messages_inprogress",
    "Messages running now (sampled every second by each worker process).",
    ["queue", "actor"],
    multiprocess_mode="livesum",
)
TIME_LIMITS = Counter(
    "callboard_time_limit",
    "Time limits reached, by kind (soft, hard).",
    ["queue", "actor", "kind"],
)
DEAD_LETTERS_STORED = Counter(
    "callboard_dead_letters",
    "Dead letters moved into the store, by reason (counted once, by the process that stored it).",
    ["queue", "actor", "reason"],
)
RESCUED = Counter(
    "callboard_rescued",
    "Messages of dead workers requeued by the rescuer (delayed ones under their queue).",
    ["queue"],
)
# Set by the supervisor (one writer; "max" ignores the zeros its forked children inherit).
WORKER_PROCESSES = Gauge(
    "callboard_worker_processes",
    "Worker processes alive in this pod.",
    multiprocess_mode="max",
)
WORKER_HEARTBEAT = Gauge(
    "callboard_worker_heartbeat_timestamp_seconds",
    "Unix time of the stalest live worker process's last heartbeat in this pod.",
    multiprocess_mode="max",
)
WORKER_THREADS_STUCK = Gauge(
    "callboard_worker_threads_stuck",
    "Worker threads still running past their message's hard time limit plus a grace.",
    multiprocess_mode="max",
)
# Set by each worker process and summed over the live ones.
WORKER_THREADS_BUSY = Gauge(
    "callboard_worker_threads_busy",
    "Worker threads running a message now.",
    multiprocess_mode="livesum",
)
WORKER_THREADS = Gauge(
    "callboard_worker_threads",
    "Worker threads configured in live worker processes.",
    multiprocess_mode="livesum",
)

#: The unlabelled metrics a worker pod exports (the scheduler's stay out of its exposition).
WORKER_POD_GAUGES = (
    WORKER_PROCESSES,
    WORKER_HEARTBEAT,
    WORKER_THREADS_STUCK,
    WORKER_THREADS_BUSY,
    WORKER_THREADS,
)

# -- circuit breakers (worker processes) ----------------------------------------------------
# ``breaker`` is the breaker's family, the part of its name before ":" (``smtp``, ``webhook``):
# per-host webhook breakers would make one series per host a producer names.

BREAKER_TRANSITIONS = Counter(
    "callboard_breaker_transitions",
    "Circuit-breaker state changes, by new state (opened, half_open, closed), counted by the "
    "process that made the change.",
    ["breaker", "state"],
)
BREAKER_DELAYED = Counter(
    "callboard_breaker_delayed",
    "Messages delayed (re-enqueued, not failed) because their circuit breaker was open.",
    ["breaker"],
)

# -- broker gauges (set by the scheduler leader only) ---------------------------------------

QUEUE_DEPTH = Gauge("callboard_queue_depth", "Messages ready to run, not yet fetched.", ["queue"])
QUEUE_IN_FLIGHT = Gauge(
    "callboard_queue_in_flight", "Messages fetched by workers (running or prefetched).", ["queue"]
)
QUEUE_DELAYED = Gauge("callboard_queue_delayed", "Messages waiting for their due time.", ["queue"])
QUEUE_OLDEST_AGE = Gauge(
    "callboard_queue_oldest_age_seconds", "Age of the oldest message ready to run (0 if none).", ["queue"]
)
DEAD_LETTERS_CURRENT = Gauge(
    "callboard_dead_letters_current",
    "Dead letters in the store now, waiting for an operator (state dead).",
    ["queue"],
)
QUEUE_SLA = Gauge("callboard_queue_sla_seconds", "The queue's SLA from the catalogue.", ["queue"])
BROKER_GAUGES_UPDATED = Gauge(
    "callboard_broker_gauges_timestamp_seconds", "Unix time the broker gauges were last refreshed."
)

# -- scheduler -------------------------------------------------------------------------------

FIRES = Counter(
    "callboard_scheduler_fires",
    "Scheduled slots handled, by outcome (sent, caught_up, skipped_overlap, missed, send_failed).",
    ["entry", "outcome"],
)
LATENESS = Histogram(
    "callboard_scheduler_lateness_seconds",
    "How late a slot's message was sent after its slot time.",
    ["entry"],
    buckets=LATENESS_BUCKETS,
)
LAST_FIRE = Gauge(
    "callboard_scheduler_last_fire_timestamp_seconds",
    "Unix time of the entry's last slot sent successfully.",
    ["entry"],
)
ENTRY_INTERVAL = Gauge(
    "callboard_scheduler_entry_interval_seconds",
    "The entry's nominal interval between fires (for 'has not fired for 2x its interval').",
    ["entry"],
)
LEADER = Gauge("callboard_scheduler_leader", "1 while this replica holds the scheduler lease.")
RELOADS = Counter("callboard_scheduler_reloads", "Schedule reloads, by outcome (ok, failed).", ["outcome"])
TICK = Gauge("callboard_scheduler_tick_timestamp_seconds", "Unix time of the daemon's last main-loop pass.")

# -- ops: alerts and the periodic health check -------------------------------------------------

ALERTS = Counter(
    "callboard_alerts",
    "Alerts handled by send_alert, by level and outcome (sent, suppressed as a repeat).",
    ["level", "outcome"],
)
HEALTH_CHECKS = Counter(
    "callboard_health_checks",
    "Runs of periodic_health_check, by outcome (ok, degraded, critical).",
    ["outcome"],
)

# -- idempotency (issue 6) -------------------------------------------------------------------

IDEMPOTENT_DUPLICATES = Counter(
    "callboard_idempotent_duplicates",
    "Messages acked without running because another message holds their idempotency key.",
    ["queue", "actor"],
)
IDEMPOTENCY_FALLBACKS = Counter(
    "callboard_idempotency_fallbacks",
    "Idempotency keys claimed in the database because the state Redis was unavailable.",
)
