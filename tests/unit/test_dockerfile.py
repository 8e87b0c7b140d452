"""Static checks of the Dockerfile and .dockerignore (no Docker engine needed): a two-stage build
on python:3.11-slim whose final stage holds the builder's venv only, runs as uid 10001, and starts
``callboard worker``."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: Compilers and headers: none may be installed in the final stage.
BUILD_TOOLS = re.compile(r"(?<![\w.-])(gcc|g\+\+|cc|clang|make|build-essential|\S+-dev)(?![\w.+-])")


@dataclass
class Stage:
    """One ``FROM`` and the instructions under it, as (KEYWORD, arguments) pairs."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order: continuations joined, comments and blanks dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        joined = pending + line
        pending = ""
        keyword, _, arguments = joined.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, with ``${ARG}`` in FROM resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=image, name=name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, default = arguments.partition("=")
            args[key] = default
        else:
            stages[-1].instructions.append((keyword, arguments))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value


def env_of(stage: Stage) -> dict[str, str]:
    """Every ``ENV key=value`` of ``stage`` (later values win)."""
    env: dict[str, str] = {}
    for arguments in stage.arguments("ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_build_tool_pattern() -> None:
    assert BUILD_TOOLS.findall("apt-get install -y gcc libpq-dev && make && apt install g++")
    assert not BUILD_TOOLS.findall("useradd --uid 10001 callboard && mkdir /app && makedirs gcc-free")


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "ARG A=x:1\nFROM ${A} AS b\n# note\nRUN one \\\n    # inner\n    && two\nFROM $A\nUSER 1\n"
    args, parsed = parse(text)
    assert args == {"A": "x:1"}
    assert [(s.image, s.name) for s in parsed] == [("x:1", "b"), ("x:1", None)]
    assert parsed[0].instructions == [("RUN", "one && two")]


def test_two_stages_on_python_3_11_slim(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert {stage.image for stage in stages} == {"python:3.11-slim"}
    assert stages[0].name == "builder"


def test_builder_installs_the_lock_then_the_project_without_dependencies(stages: list[Stage]) -> None:
    builder = stages[0]
    runs = " ; ".join(builder.arguments("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert re.search(r"pip install [^;&]*-r requirements\.lock", runs), runs
    assert re.search(r"pip install [^;&]*--no-deps \.(\s|$)", runs), runs
    assert runs.index("requirements.lock") < runs.index("--no-deps")
    assert env_of(builder)["PATH"].startswith("/opt/venv/bin:")


def test_final_stage_copies_the_venv_only_and_has_no_build_tools(final: Stage) -> None:
    copies = final.arguments("COPY") + final.arguments("ADD")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    runs = " ".join(final.arguments("RUN")).lower()
    assert not BUILD_TOOLS.findall(runs), runs
    assert "pip install" not in runs and "apt-get install" not in runs


def test_final_stage_runs_as_uid_10001(final: Stage) -> None:
    users = final.arguments("USER")
    assert users and users[-1] == "10001"  # numeric, so Kubernetes' runAsNonRoot can check it
    runs = " ".join(final.arguments("RUN"))
    assert "--uid 10001" in runs


def test_final_stage_environment_and_workdir(final: Stage) -> None:
    env = env_of(final)
    assert env["CALLBOARD_DATA_DIR"] == "/tmp/callboard"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert final.arguments("WORKDIR")[-1] == "/app"


def test_entrypoint_is_callboard_and_command_is_worker(final: Stage) -> None:
    assert exec_form(final.arguments("ENTRYPOINT")[-1]) == ["callboard"]
    assert exec_form(final.arguments("CMD")[-1]) == ["worker"]


def test_dockerignore_lets_in_only_the_package_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # allow-list: everything out, then the package back in
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "requirements.lock", "service", "actors", "scheduler", "config"} <= allowed
    assert not allowed & {".venv", "var", ".git", "tests", "bench", "build", "deploy"}
    assert "**/__pycache__" in patterns
