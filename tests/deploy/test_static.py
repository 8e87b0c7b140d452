"""Linters of the deployment files: ``hadolint`` on the Dockerfile (no ignored rule) and
``yamllint --strict`` on everything under deploy/ with its configuration, deploy/.yamllint.yaml;
and the image's ``CALLBOARD_*`` environment against the settings model."""

from __future__ import annotations

from pathlib import Path

from tests.deploy.manifests import DEPLOY, REPO, run, setting_variables, settings_from, tool
from tests.unit.test_dockerfile import env_of, parse


def test_hadolint_passes_the_dockerfile() -> None:
    result = run(tool("hadolint"), "--no-color", str(REPO / "Dockerfile"))

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_environment_is_settings() -> None:
    # The final stage's ENV, read by the Dockerfile tests' own parser.
    final = parse((REPO / "Dockerfile").read_text())[1][-1]
    variables = {k: v for k, v in env_of(final).items() if k.startswith("CALLBOARD_")}

    assert {"CALLBOARD_DATA_DIR", "CALLBOARD_METRICS_DIR"} <= set(variables)
    assert set(variables) <= setting_variables()
    assert all(value.startswith("/tmp/") for value in variables.values())  # writable: a volume
    settings_from(variables)


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
