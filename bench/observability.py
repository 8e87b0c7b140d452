"""What metrics and logs cost a message: Callboard with observability on against off, alternated.

    .venv/bin/python bench/observability.py [--pairs 5] [--messages 20000]

Both sides are ``callboard worker`` with recycling off (``callboard-norecycle``: metrics served,
INFO logs, as shipped; ``callboard-norecycle-quiet``: ``CALLBOARD_METRICS_PORT=0``, which leaves
the Metrics middleware out, and WARNING logs). Runs alternate on, off, on, off... each in a fresh
private Redis and driver (as ``throughput.py`` measures one run), so drift of the machine over
the benchmark hits both sides alike; each pair gives a ratio, and the medians of the ratios are
reported: drain rate (on / off, higher is better) and worker CPU per message (on / off, lower is
better). No-op messages make this the worst case: any real actor's own work dilutes the cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness import alternate, median, results_dir, table

THROUGHPUT = Path(__file__).resolve().with_name("throughput.py")
ON, OFF = "callboard-norecycle", "callboard-norecycle-quiet"

#: The issue's target: observability costs at most 5 % of throughput.
TARGET = 0.95


def main(argv: list[str] | None = None) -> int:
    """Alternate the two systems ``--pairs`` times and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="on/off pairs (default 5)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (default 20000)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    directory = results_dir("observability")
    options = [f"--processes={args.processes}", f"--threads={args.threads}", f"--messages={args.messages}"]
    print(
        f"observability: {args.pairs} pairs of {args.messages} no-op messages; logs in {directory}",
        flush=True,
    )
    pairs = alternate(THROUGHPUT, (ON, OFF), options, args.pairs, directory)
    rows = []
    drain_ratios, cpu_ratios = [], []
    for number, pair in enumerate(pairs, 1):
        on, off = pair[ON], pair[OFF]
        drain_ratios.append(on["drain_per_s"] / off["drain_per_s"])
        cpu_ratios.append(on["worker_cpu_us_per_message"] / off["worker_cpu_us_per_message"])
        rows.append(
            [
                str(number),
                f"{on['drain_per_s']:,.0f} / {off['drain_per_s']:,.0f}",
                f"{drain_ratios[-1]:.3f}",
                f"{on['worker_cpu_us_per_message']:.0f} / {off['worker_cpu_us_per_message']:.0f}",
                f"{cpu_ratios[-1]:.3f}",
            ]
        )
    print()
    print(table(["pair", "drain msg/s on / off", "ratio", "worker CPU us/msg on / off", "ratio"], rows))
    drain, cpu = median(drain_ratios), median(cpu_ratios)
    print()
    verdict = "met" if drain >= TARGET else "NOT met"
    print(f"drain, observability on / off: median {drain:.3f} (target >= {TARGET}: {verdict})")
    print(f"worker CPU per message, on / off: median {cpu:.3f} ({(cpu - 1) * 100:+.1f} %)")
    summary = {"pairs": pairs, "drain_ratios": drain_ratios, "cpu_ratios": cpu_ratios}
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
