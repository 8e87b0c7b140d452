"""Scheduler: start-up, idle CPU and memory of ``callboard scheduler`` holding 10 000 entries, and
the fire lateness of an every-second entry under that load.

    .venv/bin/python bench/schedule_daemon.py [--entries 10000] [--seconds 30] [--runs 3]
                                        [--scenarios baseline,loaded,quiet] [--no-reload]

Scenarios (each run ``--runs`` times, medians reported):

* ``baseline``: one entry, ``tick`` (``every = "1s"``, ``catchup = "all"``);
* ``loaded``: ``tick`` plus ``--entries`` quiet entries: crons (daily, weekly and monthly, at
  random minutes, in 8 zones) whose hour is 10 to 14 hours away in their zone, so none fires
  during the run; every entry has its own arguments, and most have distinct expressions;
* ``quiet``: the quiet entries alone (pure idle: no fire at all).

Per run, against a fresh SQLite database in a temporary directory (migrated with
``callboard db upgrade``) and one private Redis (``EmbeddedRedis``, or ``--redis-url``; the
benchmark's keys are deleted between runs):

1. time ``callboard schedule validate --file`` (a whole process: interpreter, imports, actors,
   validation);
2. start a real ``callboard scheduler`` (JSON logs, lease 15 s) and time, from the spawn, its
   ``scheduler.started`` (validated, timers installed), ``scheduler.leader`` and the moment its
   CPU use settles (the leader's first catch-up pass over every entry is over: two 0.5 s windows
   under 15 % of a core in a row);
3. over ``--seconds``: its CPU time (psutil, all threads) as % of one core, its RSS (sampled each
   second; peak ``VmHWM`` at the end), the CPU other processes used meanwhile, and the lateness of
   every ``tick`` slot in the window, from its ``schedule.fired`` line (``lateness_ms``: slot →
   message in the broker and history updated) and from the fire history table (``lateness``:
   slot → slot claimed), and the slots of the window missing or sent twice;
4. unless ``--no-reload``: append a comment to the schedule file (the daemon checks the file's
   digest every lease/3 = 5 s) and time until ``schedule.reloaded``; the lateness of ``tick`` over
   the :data:`AFTER_RELOAD` seconds after the change (slots sent late as ``caught_up`` included);
5. SIGTERM; time until the process exits.

Logs and JSON go to ``bench/results/scheduler-<time>/`` (git-ignored).

This file shares its name with the ``scheduler`` package. Run as a script, it has ``bench/``
first on ``sys.path``, so it must never ``import scheduler``; the daemons it starts run
``python -m service.cli.main`` from the repository root, which finds the package first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psutil
from harness import (
    PYTHON,
    ROOT,
    ForeignLoad,
    RedisTarget,
    child_env,
    delete_own_keys,
    median,
    percentile,
    process_cpu_seconds,
    redis_for,
    results_dir,
    table,
)

ACTOR = "bench_sched_noop"
TICK = "tick"
LEASE_SECONDS = 15.0
#: The issue's targets.
TARGET_LATENESS_P99_MS = 100.0
TARGET_IDLE_CPU_PERCENT = 2.0
#: The first catch-up pass is over when the daemon's CPU stays under this share of a core.
SETTLED_BELOW = 0.15
SETTLE_WINDOW = 0.5
#: Seconds after the schedule file changes over which the reload's effect on ``tick`` is measured
#: (detection up to lease/3, the reload, its catch-up pass, and the next lease renewal after it).
AFTER_RELOAD = 25.0
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Europe/London",
)
SCENARIOS = ("baseline", "loaded", "quiet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000, help="quiet entries (default 10000)")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="measurement window once settled (default 30)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; medians reported (default 3)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma list (default {','.join(SCENARIOS)})"
    )
    parser.add_argument("--no-reload", action="store_true", help="skip the reload phase")
    parser.add_argument("--seed", type=int, default=4, help="seed of the generated schedule (default 4)")
    parser.add_argument(
        "--redis-url",
        help="use this Redis server (redis:// or unix://) instead of a private one; database "
        "--redis-db, only the benchmark's keys are deleted",
    )
    parser.add_argument("--redis-db", type=int, default=10, help="database with --redis-url (default 10)")
    parser.add_argument(
        "--callboard-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra CALLBOARD_* setting for the scheduler; repeatable",
    )
    args = parser.parse_args(argv)
    args.scenario_names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(args.scenario_names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    return args


# -- the schedule file ------------------------------------------------------------------------------


def quiet_entries(count: int, seed: int, now: datetime) -> list[str]:
    """``count`` entries that do not fire for the next 10 hours: crons whose hour, in their own
    zone, is 10 to 14 hours after ``now``; daily, weekly and monthly in turn, random minutes."""
    rng = random.Random(seed)
    tables = []
    for number in range(count):
        zone = ZONES[number % len(ZONES)]
        local = now.astimezone(ZoneInfo(zone))
        hour = (local.hour + 10 + rng.randrange(5)) % 24
        minute = rng.randrange(60)
        kind = number % 3
        if kind == 0:
            cron = f"{minute} {hour} * * *"
        elif kind == 1:
            cron = f"{minute} {hour} * * {rng.randrange(7)}"
        else:
            cron = f"{minute} {hour} {rng.randrange(1, 29)} * *"
        tables.append(
            f'[entries.quiet-{number:05d}]\nactor = "{ACTOR}"\ncron = "{cron}"\n'
            f'timezone = "{zone}"\nargs = [{number}]\n'
        )
    return tables


def tick_entry() -> str:
    """The every-second entry whose lateness is measured (``all``: no slot is dropped silently)."""
    return f'[entries.{TICK}]\nactor = "{ACTOR}"\nevery = "1s"\ncatchup = "all"\ncatchup_window = "1m"\n'


def write_schedule(path: Path, scenario: str, entries: int, seed: int) -> int:
    """Write ``scenario``'s schedule to ``path``; returns its number of entries."""
    tables: list[str] = []
    if scenario in ("baseline", "loaded"):
        tables.append(tick_entry())
    if scenario in ("loaded", "quiet"):
        tables.extend(quiet_entries(entries, seed, datetime.now(UTC)))
    path.write_text('[defaults]\ntimezone = "UTC"\ncatchup = "latest"\n\n' + "\n".join(tables))
    return len(tables)


# -- the daemon's log ---------------------------------------------------------------------------------


class LogTail:
    """The JSON lines of a log file, read as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = ""

    def poll(self) -> list[dict[str, Any]]:
        """Read what was written since the last call; returns the new JSON events."""
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            handle.seek(self._offset)
            text = handle.read()
            self._offset = handle.tell()
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict):
                    new.append(event)
        self.events.extend(new)
        return new

    def named(self, name: str) -> list[dict[str, Any]]:
        """Every event called ``name`` so far."""
        self.poll()
        return [event for event in self.events if event.get("event") == name]

    def wait_for(self, name: str, process: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
        """The first ``name`` event; raises if the process exits or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.named(name)
            if found:
                return found[0]
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"scheduler exited with {code} before {name}; see {self.path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} within {timeout:.0f} s; see {self.path}")
            time.sleep(0.02)


def event_time(event: dict[str, Any]) -> float:
    """The epoch seconds of a JSON log line's ``ts`` (millisecond resolution)."""
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def slot_time(event: dict[str, Any]) -> float:
    """The epoch seconds of a ``schedule.fired`` line's slot."""
    return datetime.fromisoformat(event["slot"]).timestamp()


# -- one run ------------------------------------------------------------------------------------------


def callboard(*arguments: str) -> list[str]:
    """The command line of ``callboard ARGUMENTS`` from this checkout."""
    return [PYTHON, "-m", "service.cli.main", *arguments]


def history_lateness(database: Path, start: float, end: float) -> dict[float, float]:
    """Slot (epoch s) → lateness (s, slot → claimed) of ``tick``'s fires with a slot in [start, end)."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(
            "SELECT slot, lateness FROM callboard_schedule_fires WHERE entry = ?", (TICK,)
        ).fetchall()
    found = {}
    for slot, lateness in rows:
        moment = datetime.fromisoformat(slot)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if start <= moment.timestamp() < end:
            found[moment.timestamp()] = lateness
    return found


def fires_between(log: LogTail, start: float, end: float) -> list[dict[str, Any]]:
    """``tick``'s ``schedule.fired`` lines with a slot in [start, end)."""
    return [
        event
        for event in log.named("schedule.fired")
        if event.get("entry") == TICK and start <= slot_time(event) < end
    ]


def lateness_figures(fires: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """p50/p99/max of ``lateness_ms``, and the slots of [start, end) sent not once."""
    late = [float(event["lateness_ms"]) for event in fires]
    expected = {float(second) for second in range(math.ceil(start), math.ceil(end))}
    slots = [slot_time(event) for event in fires]
    return {
        "fires": len(fires),
        "expected": len(expected),
        "missing": len(expected - set(slots)),
        "doubled": len(slots) - len(set(slots)),
        "outcomes": sorted({str(event.get("outcome")) for event in fires}),
        "caught_up": sum(1 for event in fires if event.get("outcome") == "caught_up"),
        "over_100ms": sum(1 for value in late if value > 100),
        "p50_ms": percentile(late, 50),
        "p99_ms": percentile(late, 99),
        "max_ms": max(late) if late else math.nan,
    }


def settle(process: psutil.Process, timeout: float) -> float:
    """Wait until ``process`` uses under :data:`SETTLED_BELOW` of a core over two windows in a row;
    returns the monotonic time the first of those windows began."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        began = time.monotonic()
        before = process_cpu_seconds(process)
        time.sleep(SETTLE_WINDOW)
        share = (process_cpu_seconds(process) - before) / (time.monotonic() - began)
        if share < SETTLED_BELOW:
            if quiet_since is not None:
                return quiet_since
            quiet_since = began
        else:
            quiet_since = None
    raise TimeoutError(f"the scheduler's CPU did not settle within {timeout:.0f} s")


def own_cpu(process: psutil.Process) -> Any:
    """A function returning the CPU seconds so far of the scheduler, this benchmark and our Redis."""
    me = psutil.Process()
    servers = [child for child in me.children() if "redis-server" in child.name()]

    def used() -> float:
        total = process_cpu_seconds(process) + process_cpu_seconds(me)
        for server in servers:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process_cpu_seconds(server)
        return total

    return used


def peak_rss(pid: int) -> int:
    """``VmHWM`` (peak resident set) of ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def one_run(
    args: argparse.Namespace, scenario: str, number: int, target: RedisTarget, directory: Path
) -> dict[str, Any]:
    """Start a scheduler on ``scenario``'s schedule and measure it; returns the run's figures."""
    label = f"{scenario}-{number}"
    with tempfile.TemporaryDirectory(prefix="cb-bench-sched-") as tmpdir:
        work = Path(tmpdir)
        database = work / "callboard.db"
        schedule = work / "schedule.toml"
        entries = write_schedule(schedule, scenario, args.entries, args.seed)
        extra = dict(item.split("=", 1) for item in args.callboard_env)
        env = child_env(
            {
                "CALLBOARD_DATABASE_URL": f"sqlite:///{database}",
                "CALLBOARD_BROKER_URL": target.url,
                "CALLBOARD_DATA_DIR": str(work / "var"),
                "CALLBOARD_ACTOR_MODULES": "actors_scheduler",
                "CALLBOARD_SCHEDULE_FILE": str(schedule),
                "CALLBOARD_SCHEDULER_LEASE": str(LEASE_SECONDS),
                "CALLBOARD_LOG_FORMAT": "json",
                **extra,
            }
        )
        subprocess.run(callboard("db", "upgrade"), env=env, cwd=ROOT, check=True, capture_output=True)

        started = time.perf_counter()
        validated = subprocess.run(
            callboard("schedule", "validate", "--file", str(schedule)), env=env, cwd=ROOT, capture_output=True
        )
        validate_s = time.perf_counter() - started
        if validated.returncode != 0:
            raise RuntimeError(f"schedule validate failed: {validated.stderr.decode()[-2000:]}")

        log_path = directory / f"{label}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed below
        spawned = time.time()
        child = subprocess.Popen(
            callboard("scheduler"),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log = LogTail(log_path)
        try:
            process = psutil.Process(child.pid)
            up = log.wait_for("scheduler.started", child, timeout=300)
            leader = log.wait_for("scheduler.leader", child, timeout=300)
            settled_mono = settle(process, timeout=300)
            settled = time.time() - (time.monotonic() - settled_mono)
            time.sleep(1.5)  # let the last slot before the window be logged
            startup = (
                lateness_figures(fires_between(log, spawned, settled), event_time(leader), settled)
                if scenario != "quiet"
                else None
            )

            # The measurement window
            client = target.client()
            own = ForeignLoad(own_cpu(process))
            own.start()
            window_start = time.time()
            cpu_before = process_cpu_seconds(process)
            mono_start = time.monotonic()
            rss: list[int] = []
            while time.monotonic() - mono_start < args.seconds:
                rss.append(process.memory_info().rss)
                time.sleep(min(1.0, max(0.0, args.seconds - (time.monotonic() - mono_start))))
            cpu_share = (process_cpu_seconds(process) - cpu_before) / (time.monotonic() - mono_start)
            foreign = own.share()
            window_end = time.time()
            time.sleep(1.5)  # let the window's last slot be logged
            window = (
                lateness_figures(fires_between(log, window_start, window_end), window_start, window_end)
                if scenario != "quiet"
                else None
            )
            claimed = history_lateness(database, window_start, window_end)  # before the reload
            claimed_ms = [seconds * 1000 for seconds in claimed.values()]
            queued = 0
            for body in client.hvals("dramatiq:default.msgs"):
                options = json.loads(body).get("options", {})
                queued += options.get("schedule_entry") == TICK
            sent_total = len([e for e in log.named("schedule.fired") if e.get("entry") == TICK])

            reload: dict[str, Any] = {}
            if not args.no_reload:
                changed = time.time()
                with open(schedule, "a", encoding="utf-8") as handle:
                    handle.write("\n# changed by the benchmark\n")
                reloaded = log.wait_for("schedule.reloaded", child, timeout=120)
                end = changed + AFTER_RELOAD
                time.sleep(max(0.0, end - time.time()) + 1.5)
                after = lateness_figures(fires_between(log, changed, end), changed, end)
                reload = {
                    "detected_and_reloaded_s": event_time(reloaded) - changed,
                    "lateness_after": after if scenario != "quiet" else None,
                    "failed": len(log.named("schedule.reload_failed")),
                }
            hwm = peak_rss(child.pid)

            stop_at = time.monotonic()
            child.send_signal(signal.SIGTERM)
            exit_code = child.wait(60)
            stop_s = time.monotonic() - stop_at
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            log_file.close()
        tick_sent = sum(1 for event in log.named("schedule.fired") if event.get("entry") == TICK)
        run = {
            "scenario": scenario,
            "entries": entries,
            "validate_cli_s": validate_s,
            "started_s": event_time(up) - spawned,
            "leader_s": event_time(leader) - spawned,
            "settled_s": settled - spawned,
            "cpu_percent": cpu_share * 100,
            "foreign_cpu_percent": foreign * 100,
            "rss_median_mib": median(rss) / 2**20,
            "rss_peak_mib": hwm / 2**20,
            "window": window,
            "startup": startup,
            "claim_p50_ms": percentile(claimed_ms, 50),
            "claim_p99_ms": percentile(claimed_ms, 99),
            "tick_messages_in_broker_at_window_end": queued,
            "tick_fires_logged_at_window_end": sent_total,
            "tick_fires_logged": tick_sent,
            "reload": reload,
            "stop_s": stop_s,
            "exit_code": exit_code,
            "errors": [e for e in log.events if e.get("level") in ("error", "critical")][:5],
            "missed_events": len(log.named("schedule.missed")),
        }
    with target.client() as client:
        delete_own_keys(client)
    return run


# -- report -------------------------------------------------------------------------------------------


def summarise(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown table of medians (per-run values where they matter)."""

    def med(results: list[dict[str, Any]], key: str, digits: int = 1, runs: bool = False) -> str:
        values = [_value(result, key) for result in results]
        text = f"{median(values):,.{digits}f}"
        if runs:
            text += " (" + " / ".join(f"{value:,.{digits}f}" for value in values) + ")"
        return text

    rows = []
    for scenario, results in runs.items():
        ticking = scenario != "quiet"
        rows.append(
            [
                scenario,
                str(results[0]["entries"]),
                med(results, "validate_cli_s", 2),
                med(results, "started_s", 2),
                med(results, "leader_s", 2),
                med(results, "settled_s", 2),
                med(results, "cpu_percent", 2, runs=True),
                med(results, "rss_median_mib"),
                med(results, "rss_peak_mib"),
                med(results, "window.p50_ms") if ticking else "-",
                med(results, "window.p99_ms", runs=True) if ticking else "-",
                med(results, "window.max_ms") if ticking else "-",
                med(results, "claim_p99_ms") if ticking else "-",
                " / ".join(f"{result['foreign_cpu_percent']:.0f}" for result in results),
            ]
        )
    return table(
        [
            "scenario",
            "entries",
            "validate CLI s",
            "to started s",
            "to leader s",
            "to settled s",
            "CPU % of a core (runs)",
            "RSS MiB",
            "peak RSS MiB",
            "lateness p50 ms",
            "p99 ms (runs)",
            "max ms",
            "claim p99 ms",
            "others' CPU %",
        ],
        rows,
    )


def _value(result: dict[str, Any], key: str) -> float:
    """``result[a][b]`` for ``key`` ``"a.b"``."""
    value: Any = result
    for part in key.split("."):
        value = value[part]
    return float(value)


def _after(result: dict[str, Any], key: str) -> Any:
    """``key`` of the run's lateness figures after the reload, or None."""
    return ((result["reload"] or {}).get("lateness_after") or {}).get(key)


def transients(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown table of start-up and reload effects on ``tick``, per run."""

    def each(results: list[dict[str, Any]], get: Any, digits: int = 1) -> str:
        values = [get(result) for result in results]
        return " / ".join(
            "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}" for value in values
        )

    rows = []
    for scenario, results in runs.items():
        if scenario == "quiet":
            continue
        rows.append(
            [
                scenario,
                each(results, lambda r: r["startup"]["max_ms"], 0),
                each(results, lambda r: (r["reload"] or {}).get("detected_and_reloaded_s"), 2),
                each(results, lambda r: _after(r, "max_ms"), 0),
                each(results, lambda r: _after(r, "over_100ms"), 0),
                each(results, lambda r: _after(r, "caught_up"), 0),
                each(results, lambda r: _after(r, "missing"), 0),
            ]
        )
    return table(
        [
            "scenario",
            "start-up: max lateness ms, leader → settled (runs)",
            "file change → schedule.reloaded s",
            f"max lateness ms, {AFTER_RELOAD:.0f} s after the change",
            "fires > 100 ms late",
            "of which caught_up (> 2 s)",
            "slots missing",
        ],
        rows,
    )


def describe(run: dict[str, Any], number: int) -> str:
    """One line about one run."""
    window, reload = run["window"], run["reload"]
    parts = [
        f"  {run['scenario']} run {number}: {run['entries']} entries",
        f"validate {run['validate_cli_s']:.2f} s",
        f"started {run['started_s']:.2f} s, leader {run['leader_s']:.2f} s, settled {run['settled_s']:.2f} s",
        f"CPU {run['cpu_percent']:.2f} % of a core",
        f"RSS {run['rss_median_mib']:.1f} MiB (peak {run['rss_peak_mib']:.1f})",
    ]
    if window:
        parts.append(
            f"lateness p50 {window['p50_ms']:.1f} / p99 {window['p99_ms']:.1f} / "
            f"max {window['max_ms']:.1f} ms over {window['fires']} fires "
            f"({window['missing']} missing, {window['doubled']} doubled, "
            f"outcomes {','.join(window['outcomes'])}); claim p99 {run['claim_p99_ms']:.1f} ms"
        )
    if run["startup"]:
        startup = run["startup"]
        parts.append(f"until settled: lateness max {startup['max_ms']:.1f} ms, {startup['missing']} missing")
    if reload:
        text = f"reload {reload['detected_and_reloaded_s']:.2f} s after the change"
        after = reload.get("lateness_after")
        if after:
            text += (
                f", then lateness max {after['max_ms']:.1f} ms, {after['missing']} missing, "
                f"outcomes {','.join(after['outcomes'])}"
            )
        parts.append(text)
    parts.append(f"stop {run['stop_s']:.2f} s (exit {run['exit_code']})")
    parts.append(f"others' CPU {run['foreign_cpu_percent']:.0f} %")
    return "; ".join(parts)


def verdict(label: str, value: float, target: float, unit: str) -> str:
    """``label: value (target < x: met)``."""
    return (
        f"{label}: {value:.2f} {unit} (target < {target:g} {unit}: {'met' if value < target else 'NOT met'})"
    )


def main(argv: list[str] | None = None) -> int:
    """Run every scenario ``--runs`` times, then print the table and the targets."""
    args = parse_args(argv)
    directory = results_dir("scheduler")
    print(
        f"scheduler: {args.entries} quiet entries, {args.seconds:.0f} s windows, {args.runs} runs of "
        f"{', '.join(args.scenario_names)}; logs in {directory}",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    with redis_for(0, args.redis_url, args.redis_db) as target:
        print(f"Redis {target.url}", flush=True)
        for scenario in args.scenario_names:
            for number in range(1, args.runs + 1):
                run = one_run(args, scenario, number, target, directory)
                runs.setdefault(scenario, []).append(run)
                print(describe(run, number), flush=True)
                if run["errors"]:
                    print(f"    errors: {run['errors']}", flush=True)
    (directory / "summary.json").write_text(json.dumps(runs, indent=2, default=str))
    print()
    print(summarise(runs))
    print()
    if any(name != "quiet" for name in runs):
        print(transients(runs))
        print()
    loaded = runs.get("loaded")
    if loaded:
        count = loaded[0]["entries"]
        p99 = median([run["window"]["p99_ms"] for run in loaded])
        cpu = median([run["cpu_percent"] for run in loaded])
        print(verdict(f"lateness p99 with {count} entries", p99, TARGET_LATENESS_P99_MS, "ms"))
        print(
            verdict(f"CPU with {count} entries, one firing every second", cpu, TARGET_IDLE_CPU_PERCENT, "%")
        )
    quiet = runs.get("quiet")
    if quiet:
        cpu = median([run["cpu_percent"] for run in quiet])
        print(
            verdict(f"CPU with {quiet[0]['entries']} entries, none firing", cpu, TARGET_IDLE_CPU_PERCENT, "%")
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
