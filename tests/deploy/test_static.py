"""Linters of the deployment files: ``hadolint`` on the Dockerfile (no ignored rule) and
``yamllint --strict`` on everything under deploy/ with its configuration, deploy/.yamllint.yaml."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.manifests import DEPLOY, REPO, run, tool


def test_hadolint_passes_the_dockerfile() -> None:
    result = run(tool("hadolint"), "--no-color", str(REPO / "Dockerfile"))

    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_passes_deploy() -> None:
    result = run(
        tool("yamllint"), "--strict", "-f", "parsable", "-c", str(DEPLOY / ".yamllint.yaml"), str(DEPLOY)
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_catches_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: value\nkey: again\n")

    result = run(
        tool("yamllint"), "--strict", "-f", "parsable", "-c", str(DEPLOY / ".yamllint.yaml"), str(bad)
    )

    assert result.returncode != 0 and "key-duplicates" in result.stdout
