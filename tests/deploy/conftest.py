"""Fixtures of the deployment tests: the kustomize render of each overlay and the parsed
docker-compose file, each made once per session (kubectl runs once per overlay)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.manifests import COMPOSE_FILE, K8S, OVERLAYS, run, tool


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """``kubectl kustomize`` of each overlay, parsed: overlay name -> objects."""
    kubectl = tool("kubectl")
    renders = {}
    for overlay in OVERLAYS:
        result = run(kubectl, "kustomize", str(K8S / "overlays" / overlay))
        assert result.returncode == 0, f"kustomize {overlay}: {result.stderr}"
        renders[overlay] = [item for item in yaml.safe_load_all(result.stdout) if item]
    return renders


@pytest.fixture(scope="session")
def rendered_text(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Each overlay's render as YAML text (for the command-line validators)."""
    return {overlay: yaml.safe_dump_all(items) for overlay, items in rendered.items()}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """The docker-compose file, parsed (merge keys resolved, as Compose does)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded
