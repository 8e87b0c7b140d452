"""What status tracking and result storage cost a message: Callboard with each on against off.

    .venv/bin/python bench/status.py [--pairs 5] [--messages 20000] [--side-by-side ROUNDS]

Three sides, all ``callboard worker`` without recycling, alternated in rounds (each run in a fresh
private Redis and driver, as ``throughput.py`` measures one run), so drift of the machine hits
every side alike: ``callboard-norecycle`` (status tracking on, as shipped),
``callboard-norecycle-nostatus`` (``track_status=False`` for the no-op actor) and
``callboard-norecycle-results`` (status on and ``store_results=True``). Per round it reports the
drain rate, the worker process tree's CPU per message and the enqueue rates (``send()``,
``actor.send()``, ``send_many()``: the producer records ``enqueued`` too), and the medians of
the ratios to the status-off side. No-op messages make this the worst case.

First, in-process (one thread, ``time.process_time``, the minimum of 9 runs of 5,000 messages):
the status middleware's hooks for one message, the writer's flush per message (against a private
Redis), and the Metrics middleware's hooks as a yardstick of the machine's speed.

Target (issue 9): status tracking costs at most 5 % of throughput (drain on / off >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import alternate, median, redis_for, report_side_by_side, results_dir, table

THROUGHPUT = Path(__file__).resolve().with_name("throughput.py")
ON, OFF, RESULTS = "callboard-norecycle", "callboard-norecycle-nostatus", "callboard-norecycle-results"

#: The issue's target: status tracking costs at most 5 % of throughput.
TARGET = 0.95


def micro(count: int = 5000, repeats: int = 9) -> dict[str, float]:
    """Microseconds per message of the status hooks, the status flush and the Metrics hooks."""
    import dramatiq
    from dramatiq.broker import MessageProxy
    from dramatiq.brokers.stub import StubBroker

    from service.brokers.proxy import expose_fields
    from service.middleware.metrics import Metrics
    from service.middleware.status import StatusTracking

    broker = StubBroker()
    noop: Any = dramatiq.actor(lambda: None, actor_name="bench_noop", broker=broker)
    status = StatusTracking(ttl=60, interval=0.1, sensitive_fields=["password"])
    best: dict[str, float] = {}

    def hooks(middleware: Any) -> float:
        messages = [expose_fields(MessageProxy(noop.message())) for _ in range(count)]
        started = time.process_time()
        for message in messages:
            middleware.before_process_message(broker, message)
            middleware.after_process_message(broker, message, result=None)
        return (time.process_time() - started) / count * 1e6

    def timed(label: str, action: Callable[[], float]) -> None:
        best[label] = min(best.get(label, float("inf")), action())

    with redis_for(0, None, 0) as target:
        status.attach(target.client())
        assert status.writer is not None
        writer = status.writer
        writer._nudge = lambda: None  # type: ignore[method-assign]  # no thread: flush timed apart
        for _ in range(repeats):
            timed("status hooks", lambda: hooks(status))
            started = time.process_time()
            writer.flush()
            best["status flush"] = min(
                best.get("status flush", float("inf")), (time.process_time() - started) / count * 1e6
            )
            timed("metrics hooks (yardstick)", lambda: hooks(Metrics()))
    return best


def main(argv: list[str] | None = None) -> int:
    """Alternate the three sides ``--pairs`` times and print the ratios to status off."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="rounds (default 5; 0: in-process only)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (default 20000)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--side-by-side",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also drain status on and off at the same time, ROUNDS times (harness.side_by_side)",
    )
    args = parser.parse_args(argv)
    directory = results_dir("status")
    costs = micro()
    print(table(["in-process, per message", "us (min of 9)"], [[k, f"{v:.2f}"] for k, v in costs.items()]))
    options = [f"--processes={args.processes}", f"--threads={args.threads}", f"--messages={args.messages}"]
    if args.side_by_side:
        together = report_side_by_side(
            THROUGHPUT, ON, OFF, args.side_by_side, directory, options, args.messages
        )
        verdict = "met" if together >= TARGET else "NOT met"
        print(f"status on / off, side by side: {together:.3f} (target >= {TARGET}: {verdict})\n", flush=True)
    if not args.pairs:
        return 0
    print(f"status: {args.pairs} rounds of {args.messages} no-op messages; logs in {directory}", flush=True)
    rounds = alternate(THROUGHPUT, (ON, OFF, RESULTS), options, args.pairs, directory)
    ratios: dict[str, dict[str, list[float]]] = {ON: {}, RESULTS: {}}
    rows = []
    for number, runs in enumerate(rounds, 1):
        off = runs[OFF]
        for side in (ON, RESULTS):
            run = runs[side]
            measured = {
                "drain": run["drain_per_s"] / off["drain_per_s"],
                "worker CPU/msg": run["worker_cpu_us_per_message"] / off["worker_cpu_us_per_message"],
                "Redis CPU/msg": run["redis_cpu_us_per_message"] / off["redis_cpu_us_per_message"],
                **{
                    f"enqueue {label}": rate / off["enqueue_per_s"][label]
                    for label, rate in run["enqueue_per_s"].items()
                },
            }
            for name, value in measured.items():
                ratios[side].setdefault(name, []).append(value)
            rows.append(
                [
                    str(number),
                    side,
                    f"{run['drain_per_s']:,.0f} / {off['drain_per_s']:,.0f}",
                    f"{measured['drain']:.3f}",
                    f"{run['worker_cpu_us_per_message']:.0f} / {off['worker_cpu_us_per_message']:.0f}",
                    f"{measured['worker CPU/msg']:.3f}",
                    f"{run['redis_cpu_us_per_message']:.0f} / {off['redis_cpu_us_per_message']:.0f}",
                ]
            )
    print()
    headers = ["round", "side", "drain msg/s side / off", "ratio", "worker CPU us/msg", "ratio"]
    headers.append("Redis CPU us/msg")
    print(table(headers, rows))
    print()
    summary = [
        [side, name, f"{median(values):.3f}"] for side in ratios for name, values in ratios[side].items()
    ]
    print(table(["side", "measure", "median ratio to status off"], summary))
    drain = median(ratios[ON]["drain"])
    verdict = "met" if drain >= TARGET else "NOT met"
    print(f"\nstatus on / off drain: median {drain:.3f} (target >= {TARGET}: {verdict})")
    report = {"in_process_us": costs, "rounds": rounds, "ratios": ratios}
    (directory / "summary.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
