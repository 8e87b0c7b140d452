"""Dead letters: how fast messages are dead-lettered into the store, and bulk requeue speed and memory.

    .venv/bin/python bench/deadletters.py [--sizes 2000,10000] [--runs 3] [--large]
                                          [--postgres-url URL] [--backends sqlite,postgresql]

For each backend (SQLite; PostgreSQL when ``--postgres-url`` is given, default
``CALLBOARD_TEST_DATABASE_URL``) and each N, on a fresh database (a SQLite file in a temporary
directory, or a PostgreSQL schema created and dropped by the benchmark) migrated with
``service.db.migrate.upgrade`` and one private Redis (cleaned between runs):

1. **Dead-lettering.** Start ``callboard worker`` (2 processes x 8 threads, default settings) with
   ``actors_deadletters``; warm up until every worker process has run a message; suspend the
   whole worker tree (SIGSTOP); enqueue N messages of ``bench_dead`` (always raises,
   ``max_retries=0``) with ``send_many``; resume (SIGCONT) and time until N rows are in
   ``callboard_dead_letters`` with a message id (polled every 50 ms): stored/s = N / that time
   (also N x 99 % / the time to 99 %, without the stragglers). The workers' own mover threads
   (``DeadLetterMover``) move the broker's dead letters into the store. Then it counts rows that
   should not be there (any ``undecodable`` row: the benchmark sends none) and compares the
   workers' ``dlq.stored`` log events with the rows stored.
2. **Bulk requeue.** With the workers stopped, a fresh interpreter times
   ``requeue(store.Selection(), broker, keep_ids=False)`` over the N dead letters (requeued/s), and
   reports its peak RSS (``VmHWM``; not ``ru_maxrss``, see :func:`memory_status`) and how far the
   requeue took its RSS above where it started; it then runs a second requeue, which must send 0.
   The benchmark checks the Redis queue holds exactly N messages and the store N rows in state
   ``requeued``. On the first run of each (backend, N) the rows are reset to ``dead``, the queue
   emptied, and the requeue is repeated under ``tracemalloc`` for the peak of Python allocations
   (slower: its rate is not reported).

N = 10 000 runs ``--runs`` times (medians reported); other sizes run once. ``--large`` adds
N = 20 000. Logs and JSON go to ``bench/results/deadletters-<time>/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import probe
import redis
from harness import (
    PYTHON,
    ROOT,
    ForeignLoad,
    RedisTarget,
    WorkerGroup,
    child_env,
    delete_own_keys,
    median,
    own_cpu,
    redis_for,
    results_dir,
    table,
    wait_until,
)

SCRIPT = Path(__file__).resolve()
QUEUE = "default"  # the queue of the ``default`` policy, where ``bench_dead`` lives
SECRET_KEY = "bench-dead-letters"
REFERENCE_SIZE = 10_000  # the size run ``--runs`` times
TARGET_REQUEUE_PER_S = 2_000.0
#: Memory is "flat in N" when the requeue's peaks at the largest N are within these of the smallest
#: N's: peak RSS of the process (VmHWM), and peak of Python allocations (tracemalloc).
FLAT_RSS_TOLERANCE = 0.10
FLAT_TRACED_TOLERANCE = 0.25
TABLE = "callboard_dead_letters"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--requeue-driver`` and what follows it are internal)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="2000,10000", help="comma list of N, messages per run (default 2000,10000)"
    )
    parser.add_argument("--large", action="store_true", help="also run N = 20000")
    parser.add_argument(
        "--runs", type=int, default=3, help=f"runs at N = {REFERENCE_SIZE} (medians); other sizes run once"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CALLBOARD_TEST_DATABASE_URL"),
        help="PostgreSQL server (SQLAlchemy URL, psycopg2); a private schema is created and dropped "
        "per run (default: CALLBOARD_TEST_DATABASE_URL; none: SQLite only)",
    )
    parser.add_argument(
        "--backends", help="comma list of sqlite, postgresql (default: sqlite, and postgresql with a URL)"
    )
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument(
        "--redis-url",
        help="use this Redis server instead of a private one (database --redis-db; only the "
        "benchmark's own keys are deleted)",
    )
    parser.add_argument("--redis-db", type=int, default=10, help="database with --redis-url (default 10)")
    parser.add_argument(
        "--callboard-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra CALLBOARD_* setting for the workers and the requeue (repeatable)",
    )
    # Internal: the requeue subprocess.
    parser.add_argument("--requeue-driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--broker-url", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requeue_driver:
        return args
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if args.large and 20_000 not in sizes:
        sizes.append(20_000)
    args.size_list = sorted(set(sizes))
    if args.backends:
        args.backend_list = [name.strip() for name in args.backends.split(",") if name.strip()]
    else:
        args.backend_list = ["sqlite"] + (["postgresql"] if args.postgres_url else [])
    unknown = set(args.backend_list) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if "postgresql" in args.backend_list and not args.postgres_url:
        parser.error("postgresql needs --postgres-url (or CALLBOARD_TEST_DATABASE_URL)")
    return args


# Requeue subprocess ----------------------------------------------------------------------------------


def memory_status() -> dict[str, int]:
    """This process's resident set now (``VmRSS``) and its peak so far (``VmHWM``), in bytes.

    Not ``ru_maxrss``: Linux carries it over ``execve`` from the process that spawned us, so in a
    subprocess it reports at least the parent's peak (the benchmark's own, which grows with N).
    """
    status: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as lines:
        for line in lines:
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                status[name] = int(value.split()[0]) * 1024
    return status


def requeue_driver(args: argparse.Namespace) -> int:
    """In a fresh interpreter: time one bulk requeue of everything dead, then a second one."""
    os.environ.update(
        {
            "CALLBOARD_BROKER_URL": args.broker_url,
            "CALLBOARD_DATABASE_URL": args.database_url,
            "CALLBOARD_SECRET_KEY": SECRET_KEY,
        }
    )
    from service import runtime
    from service.db.engine import get_engine
    from service.deadletters import store
    from service.deadletters.requeue import requeue

    broker = runtime.get_broker()  # what `callboard dlq requeue --all` uses
    broker.client.ping()  # type: ignore[attr-defined]
    with get_engine().connect():
        pass
    gc.collect()
    before = memory_status()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    marks: list[tuple[int, int]] = []  # (requeued so far, RSS) after each batch

    def on_batch(count: int) -> None:
        marks.append((count, memory_status()["VmRSS"]))

    started = time.perf_counter()
    result = requeue(store.Selection(), broker, keep_ids=False, on_batch=on_batch)
    elapsed = time.perf_counter() - started
    figures: dict[str, Any] = {
        "count": result.count,
        "skipped": len(result.skipped),
        "seconds": elapsed,
        "rss_before": before["VmRSS"],
        "peak_before": before["VmHWM"],
        "peak": memory_status()["VmHWM"],
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # see memory_status
        "rss_by_count": marks,
    }
    if args.tracemalloc:
        figures["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    figures["second_count"] = requeue(store.Selection(), broker, keep_ids=False).count
    Path(args.output).write_text(json.dumps(figures))
    return 0


def run_requeue(broker_url: str, database_url: str, output: Path, extra_env: dict[str, str], traced: bool):
    """Run :func:`requeue_driver` in a fresh interpreter; returns its figures."""
    command = [
        PYTHON,
        str(SCRIPT),
        "--requeue-driver",
        f"--broker-url={broker_url}",
        f"--database-url={database_url}",
        f"--output={output}",
        *(["--tracemalloc"] if traced else []),
    ]
    completed = subprocess.run(command, env=child_env(extra_env), cwd=ROOT, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"requeue driver failed with exit code {completed.returncode}")
    return json.loads(output.read_text())


# Databases -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(backend: str, postgres_url: str | None, directory: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file in ``directory`` or a private PostgreSQL schema."""
    import sqlalchemy

    from service.db.engine import dispose_engines
    from service.db.migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{directory / 'callboard.db'}"
        try:
            upgrade(url)
            yield url
        finally:
            dispose_engines()
        return
    assert postgres_url
    schema = f"cb_bench_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Store:
    """The benchmark's own view of the dead-letter table (counts, and the reset before a traced run)."""

    def __init__(self, url: str) -> None:
        import sqlalchemy

        self._sql = sqlalchemy
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)

    def count(self, state: str | None = None, *, messages_only: bool = False) -> int:
        """Rows (of ``state``); ``messages_only``: only rows of decodable messages (a message id)."""
        conditions = (["state = :state"] if state else []) + (
            ["message_id IS NOT NULL"] if messages_only else []
        )
        query = f"SELECT count(*) FROM {TABLE}" + (" WHERE " + " AND ".join(conditions) if conditions else "")
        with self.engine.connect() as connection:
            return int(connection.execute(self._sql.text(query), {"state": state}).scalar_one())

    def phantoms(self) -> dict[str, int]:
        """Rows of reason ``undecodable`` (the benchmark sends none), and how many of them name, as
        their broker ref, the Redis id of a message that is also stored as a proper dead letter."""
        text = self._sql.text
        with self.engine.connect() as connection:
            keys = connection.execute(
                text(f"SELECT dedupe_key FROM {TABLE} WHERE reason = 'undecodable'")
            ).scalars()
            refs = {key.rsplit(":", 1)[-1] for key in keys}
            if not refs:
                return {"undecodable_rows": 0, "of_stored_messages": 0, "duplicate_message_ids": 0}
            redis_ids = {
                json.loads(options or "{}").get("redis_message_id")
                for options in connection.execute(
                    text(f"SELECT options FROM {TABLE} WHERE message_id IS NOT NULL")
                ).scalars()
            }
            repeated = connection.execute(
                text(
                    f"SELECT count(*) FROM (SELECT message_id FROM {TABLE} WHERE message_id IS NOT NULL "
                    "GROUP BY message_id HAVING count(*) > 1) AS repeated"
                )
            ).scalar_one()
        return {
            "undecodable_rows": len(refs),
            "of_stored_messages": len(refs & redis_ids),
            "duplicate_message_ids": int(repeated),
        }

    def reset_to_dead(self) -> None:
        """Every row back to ``dead``, as before the requeue (for the traced repeat)."""
        with self.engine.begin() as connection:
            connection.execute(
                self._sql.text(
                    f"UPDATE {TABLE} SET state = 'dead', requeue_token = NULL, requeue_claimed_at = NULL, "
                    "requeued_at = NULL, requeued_message_id = NULL, requeue_count = 0"
                )
            )

    def close(self) -> None:
        self.engine.dispose()


# One run ---------------------------------------------------------------------------------------------


class Producer:
    """This process as a Callboard producer on the benchmark's Redis, with the bench actors."""

    def __init__(self, target: RedisTarget, extra_env: dict[str, str]) -> None:
        for key in [key for key in os.environ if key.startswith("CALLBOARD_")]:
            del os.environ[key]
        os.environ.update(
            {
                "CALLBOARD_BROKER_URL": target.url,
                "CALLBOARD_ACTOR_MODULES": "actors_deadletters",
                "CALLBOARD_SECRET_KEY": SECRET_KEY,
                **extra_env,
            }
        )
        from config.settings import get_settings

        get_settings.cache_clear()
        from service import runtime, send_many

        runtime.load_actors()
        self.send_many = send_many
        self.broker = runtime.get_broker()


def worker_env(target: RedisTarget, url: str, data_dir: Path, extra_env: dict[str, str]) -> dict[str, str]:
    """The environment of ``callboard worker`` for one run."""
    return child_env(
        {
            "BENCH_PROBE_URL": target.url,
            "CALLBOARD_BROKER_URL": target.url,
            "CALLBOARD_DATABASE_URL": url,
            "CALLBOARD_SECRET_KEY": SECRET_KEY,
            "CALLBOARD_DATA_DIR": str(data_dir),
            "CALLBOARD_ACTOR_MODULES": "actors_deadletters",
            **extra_env,
        }
    )


def warm_up(group: WorkerGroup, producer: Producer, client: redis.Redis, processes: int) -> None:
    """Send no-ops until every worker process has run one (as ``systems.System.warm_up``)."""
    client.delete(probe.DONE_KEY, probe.PIDS_KEY)
    sent = 0
    deadline = time.monotonic() + 120
    while client.scard(probe.PIDS_KEY) < processes:
        group.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("not every worker process consumed within 120 s")
        batch = 4 * processes
        producer.send_many("bench_warm", [(1,)] * batch)
        sent += batch
        wait_until(probe.reached(client, sent), timeout=60, interval=0.02, what="warm-up")
    client.delete(probe.DONE_KEY, probe.PIDS_KEY)


def run_once(
    args: argparse.Namespace,
    backend: str,
    n: int,
    number: int,
    target: RedisTarget,
    producer: Producer,
    directory: Path,
    traced: bool,
) -> dict[str, Any]:
    """Dead-letter ``n`` messages, then bulk-requeue them; returns the run's figures."""
    client = target.client()
    extra_env = dict(item.split("=", 1) for item in args.callboard_env)
    label = f"{backend}-{n}-{number}"
    queue_key, msgs_key, dead_key = f"dramatiq:{QUEUE}", f"dramatiq:{QUEUE}.msgs", f"dramatiq:{QUEUE}.XQ"
    with (
        tempfile.TemporaryDirectory(prefix="cb-bench-dl-") as tmp,
        database(backend, args.postgres_url, Path(tmp)) as url,
    ):
        delete_own_keys(client)
        rows = Store(url)
        command = [PYTHON, "-m", "service.cli.main", "worker"]
        command += ["--processes", str(args.processes), "--threads", str(args.threads)]
        group = WorkerGroup(
            [command], worker_env(target, url, Path(tmp) / "var", extra_env), directory / f"{label}.log"
        )
        try:
            # Phase 1: dead-lettering ------------------------------------------------------------
            warm_up(group, producer, client, args.processes)
            group.settle()
            foreign = ForeignLoad(own_cpu(group))
            foreign.start()
            group.suspend()
            started = time.perf_counter()
            producer.send_many("bench_dead", [(i, f"dead letter {i}") for i in range(n)])
            enqueue_per_s = n / (time.perf_counter() - started)
            timeline: list[tuple[float, int, int, int]] = []
            started = time.perf_counter()
            group.resume()
            deadline = started + max(120.0, n / 20)
            while True:
                stored = rows.count(messages_only=True)
                elapsed = time.perf_counter() - started
                timeline.append((round(elapsed, 3), client.llen(queue_key), client.zcard(dead_key), stored))
                if stored >= n:
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{label}: {stored} of {n} dead letters stored after {elapsed:.0f} s")
                group.check_alive()
                time.sleep(0.05)
            dead_per_s = n / elapsed
            foreign_cpu = foreign.share() * 100
            consumed = next((t for t, queued, _, _ in timeline if queued == 0), None)
            # The bulk of the work, without the stragglers (see the README on the tail).
            t99 = next(t for t, _, _, count in timeline if count >= 0.99 * n)
            wait_until(lambda: client.zcard(dead_key) == 0, timeout=60, what="an empty broker DLQ")
            group.settle()
        finally:
            group.stop()
        events = log_events(group.log_path)
        phantoms = rows.phantoms()
        stored_total = rows.count()
        if rows.count(messages_only=True) != n or client.llen(queue_key) != 0:
            raise RuntimeError(
                f"{label}: {rows.count(messages_only=True)} dead letters stored for {n} messages, "
                f"{client.llen(queue_key)} still queued; worker log {group.log_path}"
            )
        # Phase 2: bulk requeue -------------------------------------------------------------------
        requeued = run_requeue(target.url, url, directory / f"{label}-requeue.json", extra_env, traced=False)
        queued, bodies = client.llen(queue_key), client.hlen(msgs_key)
        checks = {
            "requeued": requeued["count"],
            "second_requeue": requeued["second_count"],
            "queued": queued,
            "bodies": bodies,
            "rows_requeued": rows.count("requeued"),
            "rows_dead_left": rows.count("dead"),
        }
        expected = {"second_requeue": 0, "rows_dead_left": stored_total - n}
        problems = [
            f"{name} = {value} (expected {expected.get(name, n)})"
            for name, value in checks.items()
            if value != expected.get(name, n)
        ]
        # Findings about the store itself (phase 1), reported but not fatal.
        findings = []
        if stored_total != n:
            findings.append(
                f"{stored_total - n} extra rows ({phantoms['undecodable_rows']} 'undecodable', "
                f"{phantoms['of_stored_messages']} of them refs of messages also stored; "
                f"{phantoms['duplicate_message_ids']} messages stored twice)"
            )
        if events["dlq.stored"] != stored_total:
            findings.append(f"{events['dlq.stored']} dlq.stored events for {stored_total} rows")
        result: dict[str, Any] = {
            "backend": backend,
            "n": n,
            "run": number,
            "enqueue_per_s": enqueue_per_s,
            "dead_letter_seconds": elapsed,
            "dead_letter_per_s": dead_per_s,
            "queue_empty_at_s": consumed,
            "dead_letter_99_per_s": 0.99 * n / t99 if t99 else None,
            "foreign_cpu_percent": foreign_cpu,
            "requeue_seconds": requeued["seconds"],
            "requeue_per_s": requeued["count"] / requeued["seconds"],
            "requeue_rss_before": requeued["rss_before"],
            "requeue_peak_rss": requeued["peak"],
            "requeue_rss_growth": rss_growth(requeued),
            "requeue_rss_by_count": requeued["rss_by_count"],
            "rows_total": stored_total,
            "phantoms": phantoms,
            "worker_events": events,
            "checks": checks,
            "problems": problems,
            "findings": findings,
            "timeline": timeline,
        }
        if traced:
            rows.reset_to_dead()
            client.delete(queue_key, msgs_key)
            again = run_requeue(target.url, url, directory / f"{label}-traced.json", extra_env, traced=True)
            if again["count"] != n:
                problems.append(f"traced requeue sent {again['count']}")
            result["requeue_traced_peak"] = again["traced_peak"]
            result["requeue_traced_seconds"] = again["seconds"]
        rows.close()
    client.close()
    print(
        f"  {label}: dead-lettered {dead_per_s:,.0f}/s ({elapsed:.2f} s; 99 % at {t99:.2f} s"
        + (f", queue empty at {consumed:.2f} s" if consumed is not None else "")
        + f"); requeued {result['requeue_per_s']:,.0f}/s ({requeued['seconds']:.2f} s), "
        f"peak RSS {mib(requeued['peak'])} (+{mib(result['requeue_rss_growth'])} over the start)"
        + (f", tracemalloc peak {mib(result['requeue_traced_peak'])}" if traced else "")
        + f"; others' CPU {foreign_cpu:.0f} %"
        + (f"; PROBLEMS: {', '.join(problems)}" if problems else "; checks ok")
        + (f"; FINDINGS: {'; '.join(findings)}" if findings else ""),
        flush=True,
    )
    return result


def rss_growth(figures: dict[str, Any]) -> int:
    """How far the requeue took the process's RSS above where it started (peak, or the highest
    per-batch sample when the peak predates the requeue)."""
    sampled = max((rss for _, rss in figures["rss_by_count"]), default=figures["rss_before"])
    top = figures["peak"] if figures["peak"] > figures["peak_before"] else sampled
    return max(0, top - figures["rss_before"])


def log_events(path: Path) -> dict[str, int]:
    """How many times the workers logged each event that matters here (JSON log lines)."""
    counts = {"dlq.stored": 0, "message.dead": 0, "worker.recycled": 0, "dlq.move_failed": 0}
    with open(path, encoding="utf-8", errors="replace") as log:
        for line in log:
            for event in counts:
                if f'"event": "{event}"' in line:
                    counts[event] += 1
    return counts


def mib(value: float) -> str:
    """``value`` bytes in MiB, one decimal."""
    return f"{value / 2**20:.1f} MiB"


# Report ----------------------------------------------------------------------------------------------


def summarise(results: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The Markdown table (medians per backend and N) and the verdicts on the targets."""
    rows: list[list[str]] = []
    verdicts: list[str] = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["backend"], result["n"]), []).append(result)
    traced: dict[str, dict[int, float]] = {}
    peak_rss: dict[str, dict[int, float]] = {}
    for (backend, n), runs in groups.items():
        dead = median([run["dead_letter_per_s"] for run in runs])
        dead99 = median([run["dead_letter_99_per_s"] for run in runs])
        again = median([run["requeue_per_s"] for run in runs])
        peak = median([run["requeue_peak_rss"] for run in runs])
        growth = median([run["requeue_rss_growth"] for run in runs])
        peaks = [run["requeue_traced_peak"] for run in runs if "requeue_traced_peak" in run]
        if peaks:
            traced.setdefault(backend, {})[n] = peaks[0]
        peak_rss.setdefault(backend, {})[n] = peak
        rows.append(
            [
                backend,
                f"{n:,}",
                str(len(runs)),
                f"{dead:,.0f}",
                f"{dead99:,.0f}",
                f"{again:,.0f}",
                mib(peak),
                mib(growth),
                mib(peaks[0]) if peaks else "-",
                " / ".join(f"{run['requeue_per_s']:,.0f}" for run in runs),
                " / ".join(str(run["rows_total"] - run["n"]) for run in runs),
                "ok" if not any(run["problems"] for run in runs) else "PROBLEMS",
            ]
        )
        verdicts.append(
            f"{backend} N={n:,}: requeue {again:,.0f} msg/s (target ≥ {TARGET_REQUEUE_PER_S:,.0f}: "
            f"{'met' if again >= TARGET_REQUEUE_PER_S else 'NOT met'})"
        )
    for backend, by_size in peak_rss.items():
        if len(by_size) < 2 or len(traced.get(backend, {})) < 2:
            continue
        low, high = min(by_size), max(by_size)
        rss_ratio = by_size[high] / by_size[low]
        traced_ratio = traced[backend][high] / traced[backend][low]
        flat = rss_ratio <= 1 + FLAT_RSS_TOLERANCE and traced_ratio <= 1 + FLAT_TRACED_TOLERANCE
        verdicts.append(
            f"{backend}: requeue peak RSS {mib(by_size[low])} at N={low:,}, {mib(by_size[high])} at "
            f"N={high:,} (x{rss_ratio:.2f}); tracemalloc peak {mib(traced[backend][low])}, "
            f"{mib(traced[backend][high])} (x{traced_ratio:.2f}); flat in N (within "
            f"{FLAT_RSS_TOLERANCE:.0%} / {FLAT_TRACED_TOLERANCE:.0%}): {'met' if flat else 'NOT met'}"
        )
    for backend in peak_rss:
        mine = [run for run in results if run["backend"] == backend]
        extra = sum(run["rows_total"] - run["n"] for run in mine)
        stored = sum(run["rows_total"] for run in mine)
        events = sum(run["worker_events"]["dlq.stored"] for run in mine)
        verdicts.append(
            f"{backend}: {extra} rows beyond the messages sent over {len(mine)} runs "
            f"({sum(run['phantoms']['undecodable_rows'] for run in mine)} 'undecodable'); workers logged "
            f"{events:,} dlq.stored for {stored:,} rows (x{events / stored:.2f})"
        )
    headers = [
        "backend",
        "N",
        "runs",
        "dead-lettered/s",
        "first 99 %/s",
        "requeued/s",
        "requeue peak RSS",
        "RSS growth",
        "tracemalloc peak",
        "requeued/s per run",
        "extra rows per run",
        "checks",
    ]
    return table(headers, rows), verdicts


def main(argv: list[str] | None = None) -> int:
    """Run every backend and size, then print the table and the verdicts."""
    args = parse_args(argv)
    if args.requeue_driver:
        return requeue_driver(args)
    directory = results_dir("deadletters")
    print(
        f"deadletters: backends {', '.join(args.backend_list)}; N {', '.join(map(str, args.size_list))} "
        f"({args.runs} runs at N={REFERENCE_SIZE:,}); workers {args.processes} x {args.threads}; "
        f"logs in {directory}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    extra_env = dict(item.split("=", 1) for item in args.callboard_env)
    with redis_for(0, args.redis_url, args.redis_db) as target:
        producer = Producer(target, extra_env)
        for backend in args.backend_list:
            for n in args.size_list:
                for number in range(1, (args.runs if n == REFERENCE_SIZE else 1) + 1):
                    results.append(
                        run_once(args, backend, n, number, target, producer, directory, traced=number == 1)
                    )
                    (directory / "results.json").write_text(json.dumps(results, indent=2))
    text, verdicts = summarise(results)
    print()
    print(text)
    print()
    for line in verdicts:
        print(line)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    (directory / "summary.json").write_text(json.dumps({"table": text, "verdicts": verdicts}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
