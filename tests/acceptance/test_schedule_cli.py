"""``callboard schedule validate``: the real command on schedule files, against the shipped actors and
the test actors (``tests.support.actors``): exit 0 when valid, exit 1 with every problem naming its
entry on stderr (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.processes import run_callboard

VALID = """
[entries.record-often]
actor = "tb_record"
every = "30s"
args = ["scheduled"]
expires = "30s"

[entries.prune]
actor = "prune_history"
cron = "0 4 * * 0"
timezone = "Europe/Berlin"
"""

INVALID = """
[entries.good]
actor = "tb_record"
cron = "*/5 * * * *"
args = ["x"]

[entries.ghost]
actor = "no_such_actor"
cron = "0 * * * *"

[entries.wrong-args]
actor = "tb_record"
every = "1h"
"""


def schedule_env(worker_env: dict[str, str], path: Path) -> dict[str, str]:
    return {**worker_env, "CALLBOARD_SCHEDULE_FILE": str(path)}


def test_a_valid_schedule_exits_0(worker_env: dict[str, str], tmp_path: Path) -> None:
    # Given a schedule of the test actors and a shipped one
    path = tmp_path / "schedule.toml"
    path.write_text(VALID)
    # When it is validated
    result = run_callboard("schedule", "validate", env=schedule_env(worker_env, path))
    # Then it is OK, and the non-idempotent actors are warned about on stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"schedule OK: 2 entries ({path})"
    warnings = result.stderr.splitlines()
    assert warnings and all(line.startswith("warning: entry ") for line in warnings), result.stderr


def test_an_invalid_schedule_exits_1_naming_each_entry(worker_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "schedule.toml"
    path.write_text(INVALID)
    result = run_callboard("schedule", "validate", env=schedule_env(worker_env, path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    header, *problems = result.stderr.splitlines()
    assert header == f"callboard: invalid schedule {path} (2 problems):"
    assert problems[0].startswith("entry 'ghost': unknown actor 'no_such_actor'")
    assert problems[1].startswith("entry 'wrong-args': args/kwargs do not fit actor 'tb_record'")


def test_file_option_and_json(worker_env: dict[str, str], tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(VALID)
    bad.write_text(INVALID)
    env = schedule_env(worker_env, bad)  # --file wins over CALLBOARD_SCHEDULE_FILE
    ok = run_callboard("schedule", "validate", "--file", str(good), "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    [row] = json.loads(ok.stdout)
    assert (row["file"], row["valid"], row["entries"], row["problems"]) == (str(good), True, 2, [])
    assert row["warnings"]
    failed = run_callboard("schedule", "validate", "--json", env=env)
    assert failed.returncode == 1
    [row] = json.loads(failed.stdout)
    assert row["valid"] is False and len(row["problems"]) == 2


def test_an_unreadable_file_is_one_line_and_exit_1(worker_env: dict[str, str], tmp_path: Path) -> None:
    result = run_callboard("schedule", "validate", env=schedule_env(worker_env, tmp_path / "absent.toml"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith("cannot read schedule file") and "absent.toml" in lines[1]


def test_the_shipped_schedule_validates(tmp_path: Path) -> None:
    # Only the shipped actors, the shipped file (no CALLBOARD_SCHEDULE_FILE), nothing running
    env = {"CALLBOARD_DATA_DIR": str(tmp_path / "var")}
    result = run_callboard("schedule", "validate", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("schedule OK: 3 entries (") and "config/schedule.toml" in result.stdout
