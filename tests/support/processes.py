"""Run Callboard's real commands as child processes and read their JSON log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CALLBOARD = [sys.executable, "-m", "service.cli.main"]


def command_env(env: dict[str, str]) -> dict[str, str]:
    """The environment for a child command: ours minus CALLBOARD_*, plus ``env``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALLBOARD_") or k.startswith("CALLBOARD_TEST_")
    }
    base["PYTHONPATH"] = str(ROOT) + os.pathsep + base.get("PYTHONPATH", "")
    base.update(env)
    return base


def run_callboard(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``callboard ARGS`` to completion; returns the completed process (text output)."""
    return subprocess.run(
        [*CALLBOARD, *args],
        env=command_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class CallboardProcess:
    """A long-running ``callboard`` command (worker, dev) with its stderr in a file."""

    def __init__(self, *args: str, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*CALLBOARD, *args],
            env=command_env(env),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (other lines are skipped)."""
        lines = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return lines

    def events(self, event: str) -> list[dict[str, Any]]:
        """Log lines whose ``event`` is ``event``."""
        return [line for line in self.logs() if line.get("event") == event]

    def wait_for_event(self, event: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until ``event`` was logged ``count`` times; returns those lines."""
        return wait_until(
            lambda: len(self.events(event)) >= count and self.events(event),
            timeout,
            message=f"{count} x {event} in {self.log_path}",
        )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the command's main process."""
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the command to exit; returns its exit code."""
        return self.process.wait(timeout)

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL what is left (this process group only); close the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                # The command and its worker children form their own session: kill that group.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
