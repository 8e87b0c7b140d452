"""Throughput: enqueue/s and drain/s of no-op messages for bare Dramatiq, Callboard and Celery.

    .venv/bin/python bench/throughput.py [--processes 2] [--threads 8] [--messages 20000] [--runs 3]

Per system, in a fresh Redis (a private server per system, or one database each of
``--redis-url``), with the system's workers started by its own stock command:

1. warm up until every worker process has run a message;
2. per run: suspend the whole worker process tree (SIGSTOP), time each way of enqueueing
   ``--messages`` no-ops (the queue purged before each, so only the last set stays queued);
3. resume the tree (SIGCONT) and time until the actors have counted ``--messages`` completions
   (one Redis INCR per message, the same in every system): drain/s = messages / that time.

Reports medians over ``--runs`` and the ratios the "core runtime" issue targets.
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
    median,
    own_cpu,
    redis_calls,
    redis_cpu_seconds,
    redis_for,
    results_dir,
    run_driver,
    table,
    wait_until,
)
from systems import DEFAULT_SYSTEMS, SYSTEMS, make_system

SCRIPT = Path(__file__).resolve()

#: The issue's targets, by ratio (each applies to every Callboard variant measured).
TARGETS = {
    "drain / dramatiq drain": 0.85,
    "drain / celery drain": 2.5,
    "send_many() / send()": 5.0,
    "observability on / off": 0.95,
}
CALLBOARD_VARIANTS = ("callboard", "callboard-norecycle")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--driver``, ``--target`` and ``--output`` are internal)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="worker processes per system (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per system; medians reported (default 3)")
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma list of systems to run (default: {','.join(DEFAULT_SYSTEMS)}; "
        f"known: {','.join(SYSTEMS)})",
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
        help="threads: PROCESSES celery workers of THREADS threads each (the same layout); "
        "prefork: one worker with PROCESSES*THREADS child processes",
    )
    parser.add_argument(
        "--callboard-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra CALLBOARD_* setting for Callboard's workers and producer "
        "(e.g. CALLBOARD_WORKER_MAX_MESSAGES=0); repeatable",
    )
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
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
        f"--runs={args.runs}",
        f"--celery-pool={args.celery_pool}",
    ]
    return options + [f"--callboard-env={item}" for item in args.callboard_env]


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark one system (``--driver``) against ``--target``; returns the per-run figures."""
    target = RedisTarget.parse(args.target)
    extra_env = dict(item.split("=", 1) for item in args.callboard_env)
    system = make_system(
        args.driver, target, args.processes, args.threads, celery_pool=args.celery_pool, extra_env=extra_env
    )
    system.connect()
    client = target.client()
    output = Path(args.output)
    group = system.start_workers(output.with_suffix(".log"))
    runs: list[dict[str, Any]] = []
    foreign = ForeignLoad(own_cpu(group))
    try:
        system.warm_up(group, client)
        for number in range(1, args.runs + 1):
            group.settle()
            foreign.start()
            group.suspend()
            enqueue: dict[str, float] = {}
            methods = system.enqueue_methods()
            if args.ready:  # measured side by side: only the queue matters, fill it the fast way
                methods = {label: methods[label] for label in list(methods)[-1:]}
            for label, method in methods.items():
                system.purge()
                started = time.perf_counter()
                method(args.messages)
                enqueue[label] = args.messages / (time.perf_counter() - started)
            client.delete(probe.DONE_KEY)
            worker_cpu = sum(group.cpu_seconds().values())
            redis_cpu = redis_cpu_seconds(client)
            calls = redis_calls(client)
            switches = group.context_switches()
            started = time.perf_counter()
            if args.ready:
                # harness.side_by_side resumes this group and another at the same moment.
                pids = [process.pid for process in group.processes()]
                Path(args.ready).write_text(json.dumps({"pids": pids}))
            else:
                group.resume()
            wait_until(
                probe.reached(client, args.messages),
                timeout=max(120.0, args.messages / 100),
                what=f"{system.name} to drain {args.messages} messages",
            )
            elapsed = time.perf_counter() - started
            worker_cpu = sum(group.cpu_seconds().values()) - worker_cpu
            redis_cpu = redis_cpu_seconds(client) - redis_cpu
            switches = group.context_switches() - switches
            calls = {
                name: (count - calls.get(name, 0)) / args.messages
                for name, count in redis_calls(client).items()
                if count - calls.get(name, 0) >= args.messages / 100
            }
            foreign_cpu = foreign.share() * 100
            group.settle()
            extra = probe.completions(client) - args.messages
            run = {
                "enqueue_per_s": enqueue,
                "drain_per_s": args.messages / elapsed,
                # CPU of the whole worker process tree per message while draining: the cost of a
                # message, less sensitive than the rate to what else the machine does.
                "worker_cpu_us_per_message": worker_cpu / args.messages * 1e6,
                # Redis's CPU per message while draining: on a machine with few cores the server
                # competes with the workers, so its work per message costs throughput as well.
                "redis_cpu_us_per_message": redis_cpu / args.messages * 1e6,
                # Commands per message while draining (a command a script runs counts too): how
                # well fetches and acks were batched.
                "redis_calls_per_message": calls,
                # Threads that wait (on a lock, the GIL, a socket) switch: a sign of contention.
                "worker_switches_per_message": switches / args.messages,
                "extra_completions": extra,
                "foreign_cpu_percent": foreign_cpu,
            }
            runs.append(run)
            sends = ", ".join(f"{label} {rate:,.0f}/s" for label, rate in enqueue.items())
            print(
                f"  {system.name} run {number}: enqueue {sends}; drain {run['drain_per_s']:,.0f}/s"
                + f" ({run['worker_cpu_us_per_message']:.0f} us of worker CPU a message,"
                + f" {run['redis_cpu_us_per_message']:.0f} us of Redis's;"
                + f" {run['worker_switches_per_message']:.1f} context switches; Redis calls a message: "
                + ", ".join(f"{name} {count:.2f}" for name, count in sorted(calls.items()))
                + ")"
                + (f"; {extra} extra completions" if extra else "")
                + f"; other processes used {foreign_cpu:.0f} % of a core",
                flush=True,
            )
    finally:
        group.stop()
    result = {"system": system.name, "layout": system.layout, "runs": runs}
    output.write_text(json.dumps(result, indent=2))
    return result


def summarise(results: dict[str, dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The Markdown tables of medians, and the ratios the issue targets (where measured)."""
    rows = []
    medians: dict[str, dict[str, float]] = {}
    for name, result in results.items():
        runs = result["runs"]
        drain = median([run["drain_per_s"] for run in runs])
        medians[name] = {"drain": drain}
        for label in runs[0]["enqueue_per_s"]:
            rate = median([run["enqueue_per_s"][label] for run in runs])
            medians[name][label] = rate
            rows.append(
                [
                    name,
                    f"enqueue, {label}",
                    f"{rate:,.0f}",
                    _runs(runs, lambda r, k=label: r["enqueue_per_s"][k]),
                ]
            )
        rows.append([name, "drain", f"{drain:,.0f}", _runs(runs, lambda r: r["drain_per_s"])])
    text = table(["system", "measure", "msg/s (median)", "runs"], rows)
    ratios: dict[str, float] = {}
    for variant in CALLBOARD_VARIANTS:
        callboard = medians.get(variant)
        if not callboard:
            continue
        for other in ("dramatiq", "celery"):
            if other in medians:
                ratios[f"{variant} drain / {other} drain"] = callboard["drain"] / medians[other]["drain"]
        ratios[f"{variant} send_many() / send()"] = callboard["send_many()"] / callboard["send()"]
    quiet, loud = medians.get("callboard-norecycle-quiet"), medians.get("callboard-norecycle")
    if quiet and loud:
        ratios["callboard-norecycle drain, observability on / off"] = loud["drain"] / quiet["drain"]
    return text, ratios


def verdict(label: str, value: float) -> str:
    """``label: value (target ≥ x: met)`` for a ratio of :func:`summarise`."""
    target = next(target for suffix, target in TARGETS.items() if label.endswith(suffix))
    return f"{label}: {value:.2f} (target ≥ {target}: {'met' if value >= target else 'NOT met'})"


def _runs(runs: list[dict[str, Any]], value: Any) -> str:
    return " / ".join(f"{value(run):,.0f}" for run in runs)


def main(argv: list[str] | None = None) -> int:
    """Run every selected system in turn, then print the tables and the targets."""
    args = parse_args(argv)
    if args.driver:
        drive(args)
        return 0
    directory = results_dir("throughput")
    print(
        f"throughput: {args.messages} messages x {args.runs} runs, "
        f"{args.processes} processes x {args.threads} threads; logs in {directory}",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for index, name in enumerate(args.system_names):
        with redis_for(index, args.redis_url, args.redis_db) as target:
            print(f"{name}: Redis {target.url}", flush=True)
            output = directory / f"{name}.json"
            run_driver(SCRIPT, name, target, driver_options(args), output)
            results[name] = json.loads(output.read_text())
    text, ratios = summarise(results)
    print()
    print(text)
    print()
    for name, result in results.items():
        foreign = " / ".join(f"{run['foreign_cpu_percent']:.0f}" for run in result["runs"])
        print(f"{name}: {result['layout']}; other processes used {foreign} % of a core during the runs")
    print()
    for label, value in ratios.items():
        print(verdict(label, value))
    (directory / "summary.json").write_text(json.dumps({"results": results, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
