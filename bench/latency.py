"""Idle pickup latency and idle CPU of bare Dramatiq, Callboard and Celery workers.

    .venv/bin/python bench/latency.py [--messages 100] [--interval 0.2] [--idle-seconds 10]

Per system, in a fresh Redis, with one worker group (``--processes`` x ``--threads``, default
2 x 8) started by the system's own command and warmed up:

1. after two idle seconds, send ``--messages`` messages one at a time, ``--interval`` seconds
   apart, each carrying the producer's ``time.time()``; the actor records ``time.time()`` at its
   start minus that stamp (send → actor start, across processes on one clock);
2. then, with no messages, sum the CPU time of the whole worker process tree (psutil) over
   ``--idle-seconds`` and report it as a percentage of one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import probe
from harness import (
    ForeignLoad,
    RedisTarget,
    own_cpu,
    percentile,
    redis_for,
    results_dir,
    run_driver,
    table,
    wait_until,
)
from systems import SYSTEMS, make_system

SCRIPT = Path(__file__).resolve()

#: The issue's targets for Callboard.
TARGET_P99_MS = 50.0
TARGET_IDLE_CPU_PERCENT = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--driver``, ``--target`` and ``--output`` are internal)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument("--messages", type=int, default=100, help="messages sent one at a time (default 100)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between sends (default 0.2)")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="idle CPU measurement window (default 10)"
    )
    parser.add_argument(
        "--systems",
        default="dramatiq,callboard,celery",
        help=f"comma list of systems to run, from {', '.join(SYSTEMS)} (default: dramatiq,callboard,celery)",
    )
    parser.add_argument(
        "--redis-url",
        help="use this Redis server (redis:// or unix://) instead of a private one per system; "
        "each system gets its own database, from --redis-db on, and only its own keys are deleted",
    )
    parser.add_argument(
        "--redis-db", type=int, default=10, help="first database with --redis-url (default 10)"
    )
    parser.add_argument(
        "--celery-pool",
        choices=("threads", "prefork"),
        default="threads",
        help="threads: PROCESSES celery workers of THREADS threads each; prefork: one worker with "
        "PROCESSES*THREADS child processes",
    )
    parser.add_argument(
        "--callboard-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra CALLBOARD_* setting for Callboard's workers and producer; repeatable",
    )
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.system_names = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = sorted(set(args.system_names) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)} (known: {', '.join(SYSTEMS)})")
    return args


def driver_options(args: argparse.Namespace) -> list[str]:
    """The options a driver subprocess needs."""
    options = [
        f"--processes={args.processes}",
        f"--threads={args.threads}",
        f"--messages={args.messages}",
        f"--interval={args.interval}",
        f"--idle-seconds={args.idle_seconds}",
        f"--celery-pool={args.celery_pool}",
    ]
    return options + [f"--callboard-env={item}" for item in args.callboard_env]


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one system (``--driver``) against ``--target``; returns latencies and idle CPU."""
    target = RedisTarget.parse(args.target)
    extra_env = dict(item.split("=", 1) for item in args.callboard_env)
    system = make_system(
        args.driver, target, args.processes, args.threads, celery_pool=args.celery_pool, extra_env=extra_env
    )
    system.connect()
    client = target.client()
    output = Path(args.output)
    group = system.start_workers(output.with_suffix(".log"))
    foreign = ForeignLoad(own_cpu(group))
    try:
        system.warm_up(group, client)
        group.settle()
        time.sleep(2.0)  # let pollers back off as far as they go when idle
        client.delete(probe.LATENCY_KEY)
        foreign.start()
        started = time.monotonic()
        for number in range(args.messages):
            time.sleep(max(0.0, started + number * args.interval - time.monotonic()))
            system.send_pickup(time.time())
        wait_until(
            lambda: client.llen(probe.LATENCY_KEY) >= args.messages,
            timeout=30.0,
            interval=0.05,
            what=f"{system.name} to pick up {args.messages} messages",
        )
        latencies_ms = [float(value) * 1000 for value in client.lrange(probe.LATENCY_KEY, 0, -1)]
        foreign_cpu = foreign.share() * 100
        time.sleep(2.0)
        foreign.start()
        idle_cpu = group.cpu_share(args.idle_seconds) * 100
        foreign_idle_cpu = foreign.share() * 100
        group.check_alive()
    finally:
        group.stop()
    result = {
        "system": system.name,
        "layout": system.layout,
        "latency_ms": latencies_ms,
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
        "max_ms": max(latencies_ms),
        "idle_cpu_percent": idle_cpu,
        "foreign_cpu_percent": {"latency": foreign_cpu, "idle": foreign_idle_cpu},
    }
    print(
        f"  {system.name}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms; idle CPU {idle_cpu:.2f} % of a core "
        f"(other processes used {foreign_cpu:.0f} % and {foreign_idle_cpu:.0f} % of a core meanwhile)",
        flush=True,
    )
    output.write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    """Run every selected system in turn, then print the table and Callboard's targets."""
    args = parse_args(argv)
    if args.driver:
        drive(args)
        return 0
    directory = results_dir("latency")
    print(
        f"latency: {args.messages} messages {args.interval * 1000:.0f} ms apart, "
        f"{args.processes} processes x {args.threads} threads, idle CPU over {args.idle_seconds:.0f} s; "
        f"logs in {directory}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(args.system_names):
        with redis_for(index, args.redis_url, args.redis_db) as target:
            print(f"{name}: Redis {target.url}", flush=True)
            output = directory / f"{name}.json"
            run_driver(SCRIPT, name, target, driver_options(args), output)
            results[name] = json.loads(output.read_text())
    rows = [
        [
            name,
            result["layout"],
            f"{result['p50_ms']:.1f}",
            f"{result['p99_ms']:.1f}",
            f"{result['max_ms']:.1f}",
            f"{result['idle_cpu_percent']:.2f}",
            "{latency:.0f} / {idle:.0f}".format(**result["foreign_cpu_percent"]),
        ]
        for name, result in results.items()
    ]
    print()
    headers = ["system", "layout", "p50 ms", "p99 ms", "max ms", "idle CPU % of a core", "others' CPU %"]
    print(table(headers, rows))
    print("(others' CPU: other processes on this machine, % of a core, while sending / while idle)")
    callboard = results.get("callboard")
    if callboard:
        print()
        p99, idle = callboard["p99_ms"], callboard["idle_cpu_percent"]
        print(
            f"callboard p99 {p99:.1f} ms (target ≤ {TARGET_P99_MS:.0f} ms: {_verdict(p99 <= TARGET_P99_MS)})"
        )
        print(
            f"callboard idle CPU {idle:.2f} % of a core "
            f"(target ≤ {TARGET_IDLE_CPU_PERCENT:.0f} %: {_verdict(idle <= TARGET_IDLE_CPU_PERCENT)})"
        )
    (directory / "summary.json").write_text(json.dumps(results, indent=2))
    return 0


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
