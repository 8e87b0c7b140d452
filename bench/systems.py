"""The systems under test, behind one interface: start workers, send, purge.

Each system runs its workers with its own stock command, as its users run it in production:

* ``dramatiq``: ``dramatiq actors_dramatiq -p P -t T`` (plain ``RedisBroker``, default
  middleware, plain ``dramatiq.Worker``, forked processes).
* ``callboard``: ``callboard worker --processes P --threads T`` (the :class:`Supervisor` forking
  ``run_worker_process`` children, Callboard's broker and whole middleware stack), with default
  settings; ``callboard-norecycle``: the same with ``CALLBOARD_WORKER_MAX_MESSAGES=0``.
* ``celery``: ``P`` x ``celery worker --pool threads --concurrency T`` (the same P x T layout), or
  one ``celery worker --pool prefork --concurrency P*T``.

A driver process uses exactly one system: each imports its actors into the global state of its
framework, so the benchmarks start one driver subprocess per system.
"""

from __future__ import annotations

import abc
import functools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import probe
import redis
from harness import PYTHON, RedisTarget, WorkerGroup, child_env, wait_until

QUEUE = "default"


class System(abc.ABC):
    """One system under test, against one Redis database."""

    name: ClassVar[str]

    def __init__(
        self, target: RedisTarget, processes: int, threads: int, extra_env: dict[str, str] | None = None
    ) -> None:
        self.target = target
        self.processes = processes
        self.threads = threads
        self.extra_env = dict(extra_env or {})

    # Workers ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def worker_commands(self) -> list[list[str]]:
        """The commands that start this system's worker processes."""

    def worker_env(self) -> dict[str, str]:
        """The environment of the worker commands."""
        return child_env({"BENCH_PROBE_URL": self.target.url, **self.extra_env})

    @property
    def consumer_processes(self) -> int:
        """How many distinct processes run actors once every worker is up."""
        return self.processes

    @property
    def layout(self) -> str:
        """Processes x threads as run, for the report."""
        return f"{self.processes} processes x {self.threads} threads"

    def start_workers(self, log_path: Path) -> WorkerGroup:
        """Start the workers; returns their group (not yet known to be consuming)."""
        return WorkerGroup(self.worker_commands(), self.worker_env(), log_path)

    # Producer side (in the driver process) ---------------------------------------------------------

    @abc.abstractmethod
    def connect(self) -> None:
        """Import this system's actors into the driver process, bound to the target."""

    @abc.abstractmethod
    def enqueue_methods(self) -> dict[str, Callable[[int], None]]:
        """Ways to enqueue ``n`` no-op messages, by label; the system's plain one first."""

    @abc.abstractmethod
    def send_marked(self, n: int) -> None:
        """Send ``n`` warm-up no-ops that record their worker's pid."""

    @abc.abstractmethod
    def send_pickup(self, sent_at: float) -> None:
        """Send one pickup-latency message stamped ``sent_at``."""

    @abc.abstractmethod
    def purge(self) -> None:
        """Drop every queued message of the benchmark's queue."""

    # Common procedures ------------------------------------------------------------------------------

    def warm_up(self, group: WorkerGroup, client: redis.Redis, timeout: float = 120.0) -> None:
        """Send warm-up batches until every worker process has run one; then reset the counters."""
        client.delete(probe.DONE_KEY, probe.PIDS_KEY)
        sent = 0
        deadline = time.monotonic() + timeout
        while client.scard(probe.PIDS_KEY) < self.consumer_processes:
            group.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: not every worker process consumed within {timeout:.0f} s")
            batch = 2 * self.processes * self.threads
            self.send_marked(batch)
            sent += batch
            wait_until(
                probe.reached(client, sent),
                timeout=max(1.0, deadline - time.monotonic()),
                interval=0.05,
                what=f"{self.name} warm-up",
            )
        client.delete(probe.DONE_KEY, probe.PIDS_KEY)


class DramatiqSystem(System):
    """Bare Dramatiq 2 with its default middleware, run by the ``dramatiq`` command."""

    name = "dramatiq"

    def worker_commands(self) -> list[list[str]]:
        return [
            [PYTHON, "-m", "dramatiq", "actors_dramatiq", "-p", str(self.processes), "-t", str(self.threads)]
        ]

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), "BENCH_BROKER_URL": self.target.url}

    def connect(self) -> None:
        os.environ["BENCH_BROKER_URL"] = self.target.url
        import actors_dramatiq

        self._actors: Any = actors_dramatiq

    def enqueue_methods(self) -> dict[str, Callable[[int], None]]:
        noop = self._actors.bench_noop

        def actor_send(n: int) -> None:
            for _ in range(n):
                noop.send()

        return {"actor.send()": actor_send}

    def send_marked(self, n: int) -> None:
        for _ in range(n):
            self._actors.bench_noop.send(1)

    def send_pickup(self, sent_at: float) -> None:
        self._actors.bench_pickup.send(sent_at)

    def purge(self) -> None:
        self._actors.broker.flush(QUEUE)


class CallboardSystem(System):
    """Callboard's full stack, run by ``callboard worker`` (Supervisor + run_worker_process)."""

    name = "callboard"

    @functools.cached_property
    def metrics_port(self) -> int:
        """A free port for the pod's metrics endpoint (chosen once per system)."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            port: int = listener.getsockname()[1]
            return port

    def _callboard_env(self) -> dict[str, str]:
        return {
            "CALLBOARD_BROKER_URL": self.target.url,
            "CALLBOARD_ACTOR_MODULES": "actors_callboard",
            # Observability as shipped: metrics served (on a free port), one INFO line a message.
            "CALLBOARD_METRICS_PORT": str(self.metrics_port),
            "CALLBOARD_METRICS_HOST": "127.0.0.1",
            "CALLBOARD_LOG_LEVEL": "INFO",
            **{key: value for key, value in self.extra_env.items() if key.startswith("CALLBOARD_")},
        }

    def worker_commands(self) -> list[list[str]]:
        return [
            [
                PYTHON,
                "-m",
                "service.cli.main",
                "worker",
                "--processes",
                str(self.processes),
                "--threads",
                str(self.threads),
            ]
        ]

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), **self._callboard_env()}

    def connect(self) -> None:
        for key in [key for key in os.environ if key.startswith("CALLBOARD_")]:
            del os.environ[key]
        os.environ.update(self._callboard_env())
        from config.settings import get_settings

        get_settings.cache_clear()
        from service import runtime, send, send_many

        runtime.load_actors()
        import actors_callboard

        self._actors: Any = actors_callboard
        self._send = send
        self._send_many = send_many
        self._broker = runtime.get_broker()

    def enqueue_methods(self) -> dict[str, Callable[[int], None]]:
        send, send_many, noop = self._send, self._send_many, self._actors.bench_noop

        def by_name(n: int) -> None:
            for _ in range(n):
                send("bench_noop")

        def actor_send(n: int) -> None:
            for _ in range(n):
                noop.send()

        def bulk(n: int) -> None:
            send_many("bench_noop", [()] * n)

        return {"send()": by_name, "actor.send()": actor_send, "send_many()": bulk}

    def send_marked(self, n: int) -> None:
        self._send_many("bench_noop", [(1,)] * n)

    def send_pickup(self, sent_at: float) -> None:
        self._send("bench_pickup", args=[sent_at])

    def purge(self) -> None:
        self._broker.flush(QUEUE)


class CallboardNoRecycleSystem(CallboardSystem):
    """Callboard as above with process recycling off (``CALLBOARD_WORKER_MAX_MESSAGES=0``).

    Shows what the rest of the stack costs: by default each worker process is replaced after
    ``worker_max_messages`` (1000) messages, which a no-op workload reaches in a fraction of a second.
    """

    name = "callboard-norecycle"

    def _callboard_env(self) -> dict[str, str]:
        return {**super()._callboard_env(), "CALLBOARD_WORKER_MAX_MESSAGES": "0"}


class CallboardQuietSystem(CallboardNoRecycleSystem):
    """``callboard-norecycle`` with observability off: no metrics (``CALLBOARD_METRICS_PORT=0``
    leaves the Metrics middleware out) and WARNING logs, to measure what metrics and logs cost."""

    name = "callboard-norecycle-quiet"

    def _callboard_env(self) -> dict[str, str]:
        return {**super()._callboard_env(), "CALLBOARD_METRICS_PORT": "0", "CALLBOARD_LOG_LEVEL": "WARNING"}


class CallboardKeyedSystem(CallboardNoRecycleSystem):
    """``callboard-norecycle`` sending every no-op with a distinct argument (``seq``), so that
    derived idempotency keys differ; the baseline of :class:`CallboardIdempotentSystem`."""

    name = "callboard-norecycle-keyed"

    def connect(self) -> None:
        super().connect()
        self._seq = 0

    def _distinct(self, mark: int, n: int) -> list[tuple[int, int]]:
        first, self._seq = self._seq, self._seq + n
        return [(mark, seq) for seq in range(first, first + n)]

    def enqueue_methods(self) -> dict[str, Callable[[int], None]]:
        def bulk(n: int) -> None:
            self._send_many("bench_noop", self._distinct(0, n))

        return {"send_many()": bulk}

    def send_marked(self, n: int) -> None:
        self._send_many("bench_noop", self._distinct(1, n))


class CallboardIdempotentSystem(CallboardKeyedSystem):
    """``callboard-norecycle-keyed`` with idempotency on for ``bench_noop`` (scope ``global``,
    keys derived from the arguments, claimed in the state Redis: the broker's)."""

    name = "callboard-norecycle-idempotent"

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), "BENCH_IDEMPOTENCY": "global"}

    def connect(self) -> None:
        os.environ["BENCH_IDEMPOTENCY"] = "global"
        super().connect()


class CallboardVariantSystem(CallboardNoRecycleSystem):
    """``callboard-norecycle`` with ``bench_noop`` declared under one ``BENCH_*`` variable, set
    in the workers and in the driver (see ``actors_callboard.py``)."""

    name = "callboard-norecycle-variant"
    variable, value = "", ""

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), self.variable: self.value}

    def connect(self) -> None:
        os.environ[self.variable] = self.value
        super().connect()


class CallboardNoStatusSystem(CallboardVariantSystem):
    """Status tracking off for ``bench_noop`` (``track_status=False``): the baseline of
    ``bench/status.py``."""

    name = "callboard-norecycle-nostatus"
    variable, value = "BENCH_STATUS", "off"


class CallboardResultsSystem(CallboardVariantSystem):
    """Result storage on for ``bench_noop`` (``store_results=True``), status tracking on."""

    name = "callboard-norecycle-results"
    variable, value = "BENCH_RESULTS", "1"


class CelerySystem(System):
    """Celery 5 on the Redis broker: P thread-pool workers of T threads (or one prefork pool)."""

    name = "celery"

    def __init__(self, *args: Any, pool: str = "threads", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if pool not in {"threads", "prefork"}:
            raise ValueError(f"unsupported Celery pool {pool!r}")
        self.pool = pool

    @property
    def layout(self) -> str:
        if self.pool == "prefork":
            return f"1 worker, prefork pool of {self.processes * self.threads} processes"
        return f"{self.processes} workers (processes) x threads pool of {self.threads}"

    @property
    def consumer_processes(self) -> int:
        # A prefork pool hands messages to whichever child is free: one child seen is enough.
        return 1 if self.pool == "prefork" else self.processes

    def worker_commands(self) -> list[list[str]]:
        base = [PYTHON, "-m", "celery", "-A", "celery_app", "worker", "--loglevel", "WARNING"]
        quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        if self.pool == "prefork":
            concurrency = str(self.processes * self.threads)
            return [[*base, "--pool", "prefork", "--concurrency", concurrency, "-n", "bench0@%h", *quiet]]
        return [
            [*base, "--pool", "threads", "--concurrency", str(self.threads), "-n", f"bench{i}@%h", *quiet]
            for i in range(self.processes)
        ]

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), "BENCH_CELERY_BROKER_URL": self.target.kombu_url}

    def connect(self) -> None:
        os.environ["BENCH_CELERY_BROKER_URL"] = self.target.kombu_url
        import celery_app

        self._app: Any = celery_app
        self._client = self.target.client()

    def enqueue_methods(self) -> dict[str, Callable[[int], None]]:
        noop = self._app.bench_noop

        def delay(n: int) -> None:
            for _ in range(n):
                noop.delay()

        return {"delay()": delay}

    def send_marked(self, n: int) -> None:
        for _ in range(n):
            self._app.bench_noop.delay(1)

    def send_pickup(self, sent_at: float) -> None:
        self._app.bench_pickup.delay(sent_at)

    def purge(self) -> None:
        keys = list(self._client.scan_iter(match=self._app.QUEUE + "*"))
        if keys:
            self._client.delete(*keys)


SYSTEMS: dict[str, type[System]] = {
    system.name: system
    for system in (
        DramatiqSystem,
        CallboardSystem,
        CallboardNoRecycleSystem,
        CallboardQuietSystem,
        CallboardKeyedSystem,
        CallboardIdempotentSystem,
        CallboardNoStatusSystem,
        CallboardResultsSystem,
        CelerySystem,
    )
}

#: What ``throughput.py`` runs unless ``--systems`` says otherwise: the keyed pair is measured
#: by ``idempotency.py``, against each other.
DEFAULT_SYSTEMS = tuple(
    name
    for name in SYSTEMS
    if name
    not in (
        CallboardKeyedSystem.name,
        CallboardIdempotentSystem.name,
        CallboardNoStatusSystem.name,
        CallboardResultsSystem.name,
    )
)


def make_system(
    name: str,
    target: RedisTarget,
    processes: int,
    threads: int,
    *,
    celery_pool: str = "threads",
    extra_env: dict[str, str] | None = None,
) -> System:
    """The system called ``name`` (a key of :data:`SYSTEMS`)."""
    if name == CelerySystem.name:
        return CelerySystem(target, processes, threads, extra_env, pool=celery_pool)
    return SYSTEMS[name](target, processes, threads, extra_env)
