"""What idempotency keys cost: claim latency on Redis and on the database fallback, and
throughput with keys on against off.

    .venv/bin/python bench/idempotency.py [--claims 5000] [--pairs 5] [--messages 20000]
        [--database-url postgresql+psycopg2://postgres@127.0.0.1:5432/test]

1. **Check latency**, in this process, through :class:`service.idempotency.KeyStore` as a worker
   uses it: ``--claims`` claims of new keys (the check every keyed message makes before it runs),
   each followed by its settle (keep the key after a success), then as many claims of keys that
   are held (a duplicate's check). Against a private Redis server, then against the database
   fallback: PostgreSQL (``--database-url``, in a schema of its own, dropped after) reached
   through a key store whose Redis is unreachable, as during an outage.
2. **Throughput**, as ``observability.py`` measures it: ``callboard worker`` without recycling,
   keys on (``callboard-norecycle-idempotent``: scope ``global``, derived keys) against off
   (``callboard-norecycle-keyed``: the same messages), runs alternated on, off, on, off... each
   in a fresh private Redis; the median of the per-pair drain ratios is reported.

Targets (issue 6): check p50 < 2 ms on Redis and < 7 ms on the database; overhead < 7 %
(drain on / off >= 0.93).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from deadletters import database
from dramatiq.brokers.stub import StubBroker
from harness import alternate, median, percentile, redis_for, report_side_by_side, results_dir, table

from config.settings import load_settings
from service.idempotency import Claim, KeyStore
from service.state import state_client

THROUGHPUT = Path(__file__).resolve().with_name("throughput.py")
ON, OFF = "callboard-norecycle-idempotent", "callboard-norecycle-keyed"

#: The issue's targets.
REDIS_TARGET_MS, DATABASE_TARGET_MS, THROUGHPUT_TARGET = 2.0, 7.0, 0.93

DEFAULT_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def timed(action: Callable[[int], object], count: int) -> list[float]:
    """Milliseconds of each of ``count`` calls ``action(i)``."""
    samples = []
    for index in range(count):
        started = time.perf_counter()
        action(index)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(store: KeyStore, count: int) -> dict[str, list[float]]:
    """Claim, settle and duplicate-check latencies of ``count`` keys through ``store``."""
    run = uuid.uuid4().hex[:8]
    keys = [f"{run}{index:056d}" for index in range(count)]
    claims: list[Claim] = []

    def claim(index: int) -> None:
        held = store.claim(keys[index], f"m{index}", "bench_noop", 3600)
        assert held is not None
        claims.append(held)

    timed(lambda index: store.claim(f"warm{run}{index:052d}", "w", "bench_noop", 60), 50)
    result = {"claim": timed(claim, count)}
    result["settle"] = timed(lambda index: store.succeed(claims[index]), count)
    result["duplicate"] = timed(lambda index: store.claim(keys[index], "other", "bench_noop", 3600), count)
    return result


def latencies(args: argparse.Namespace, directory: Path) -> dict[str, dict[str, list[float]]]:
    """Claim latencies on a private Redis and on the database fallback."""
    results = {}
    with (
        redis_for(0, args.redis_url, args.redis_db) as target,
        database("postgresql", args.database_url, directory) as url,
    ):
        # As a worker builds it: the state client with the idempotency timeout (0.25 s).
        settings = load_settings(redis_url=target.url)
        client = state_client(StubBroker(), settings, timeout=settings.idempotency_redis_timeout)
        results["redis"] = measure(KeyStore(client, database_url=url), args.claims)
        # Nothing listens on port 1: the first claim fails over, the rest go straight to the
        # database for the failover window (set long enough to cover the measurement).
        dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.25, socket_timeout=0.25)
        results["database"] = measure(KeyStore(dead, database_url=url, failover=3600), args.claims)
    return results


def throughput(args: argparse.Namespace, directory: Path) -> dict[str, list[float]]:
    """Drain and worker-CPU-per-message ratios (on / off) of ``--pairs`` alternated runs."""
    options = [f"--processes={args.processes}", f"--threads={args.threads}", f"--messages={args.messages}"]
    ratios: dict[str, list[float]] = {"drain": [], "cpu": [], "redis cpu": [], "enqueue": []}
    for number, pair in enumerate(alternate(THROUGHPUT, (ON, OFF), options, args.pairs, directory), 1):
        on, off = pair[ON], pair[OFF]
        ratios["drain"].append(on["drain_per_s"] / off["drain_per_s"])
        ratios["cpu"].append(on["worker_cpu_us_per_message"] / off["worker_cpu_us_per_message"])
        ratios["redis cpu"].append(on["redis_cpu_us_per_message"] / off["redis_cpu_us_per_message"])
        # Producers derive each key (and write it into the message for the fetch to claim).
        sent_on, sent_off = on["enqueue_per_s"]["send_many()"], off["enqueue_per_s"]["send_many()"]
        ratios["enqueue"].append(sent_on / sent_off)
        print(
            f"  pair {number}: drain on {on['drain_per_s']:,.0f}/s, off {off['drain_per_s']:,.0f}/s "
            f"(ratio {ratios['drain'][-1]:.3f}); worker CPU on {on['worker_cpu_us_per_message']:.0f}, "
            f"off {off['worker_cpu_us_per_message']:.0f} us/msg (ratio {ratios['cpu'][-1]:.3f}); "
            f"Redis CPU on {on['redis_cpu_us_per_message']:.0f}, "
            f"off {off['redis_cpu_us_per_message']:.0f} us/msg; "
            f"send_many() on {sent_on:,.0f}/s, off {sent_off:,.0f}/s (ratio {ratios['enqueue'][-1]:.3f})",
            flush=True,
        )
    return ratios


def main(argv: list[str] | None = None) -> int:
    """Measure the check latencies, then the throughput pairs, and print both against targets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--claims", type=int, default=5000, help="keys per latency measurement (default 5000)"
    )
    parser.add_argument("--pairs", type=int, default=5, help="on/off throughput pairs (default 5; 0 skips)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (default 20000)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CALLBOARD_TEST_DATABASE_URL", DEFAULT_DATABASE),
        help=f"PostgreSQL for the fallback (default: CALLBOARD_TEST_DATABASE_URL, else {DEFAULT_DATABASE})",
    )
    parser.add_argument("--redis-url", help="use this Redis server instead of a private one")
    parser.add_argument("--redis-db", type=int, default=10, help="database with --redis-url (default 10)")
    parser.add_argument(
        "--side-by-side",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also drain keys on and off at the same time, ROUNDS times (harness.side_by_side)",
    )
    args = parser.parse_args(argv)
    directory = results_dir("idempotency")
    print(f"idempotency: {args.claims} claims per store, {args.pairs} throughput pairs; logs in {directory}")
    measured = latencies(args, directory)
    rows = []
    for store, kinds in measured.items():
        for kind, samples in kinds.items():
            rows.append(
                [
                    store,
                    kind,
                    f"{percentile(samples, 50):.3f}",
                    f"{percentile(samples, 99):.3f}",
                    f"{max(samples):.3f}",
                ]
            )
    print()
    print(table(["store", "operation", "p50 ms", "p99 ms", "max ms"], rows))
    print()
    for store, target in (("redis", REDIS_TARGET_MS), ("database", DATABASE_TARGET_MS)):
        p50, p99 = (percentile(measured[store]["claim"], q) for q in (50, 99))
        verdict = "met" if p50 < target else "NOT met"
        print(f"check on {store}: p50 {p50:.3f} ms, p99 {p99:.3f} ms (target < {target} ms: {verdict})")
    summary: dict[str, object] = {"latency_ms": measured}
    if args.side_by_side:
        print(flush=True)
        layout = [f"--processes={args.processes}", f"--threads={args.threads}", f"--messages={args.messages}"]
        together = report_side_by_side(
            THROUGHPUT, ON, OFF, args.side_by_side, directory, layout, args.messages
        )
        verdict = "met" if together >= THROUGHPUT_TARGET else "NOT met"
        print(f"keys on / off, side by side: {together:.3f} (target >= {THROUGHPUT_TARGET}: {verdict})")
        summary["side_by_side"] = together
    if args.pairs:
        print(flush=True)
        ratios = throughput(args, directory)
        drain, cpu = median(ratios["drain"]), median(ratios["cpu"])
        verdict = "met" if drain >= THROUGHPUT_TARGET else "NOT met"
        print(
            f"drain, idempotency on / off: median {drain:.3f}, overhead {(1 - drain) * 100:.1f} % "
            f"(target < {(1 - THROUGHPUT_TARGET) * 100:.0f} %: {verdict})"
        )
        print(f"worker CPU per message, on / off: median {cpu:.3f} ({(cpu - 1) * 100:+.1f} %)")
        served = median(ratios["redis cpu"])
        print(f"Redis CPU per message, on / off: median {served:.3f} ({(served - 1) * 100:+.1f} %)")
        sent = median(ratios["enqueue"])
        print(f"enqueue send_many(), on / off: median {sent:.3f} ({(sent - 1) * 100:+.1f} %)")
        summary["ratios"] = ratios
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
