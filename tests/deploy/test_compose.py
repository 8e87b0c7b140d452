"""The docker-compose stack (deploy/compose), checked offline the way ``docker compose config``
would and further: every service, image, port, volume and variable, the pools against the
Kubernetes ones, and Prometheus and Grafana wired to what the stack runs."""

from __future__ import annotations

import re
from typing import Any

import yaml

from service.cli.main import build_parser
from tests.deploy.manifests import (
    COMPOSE_FILE,
    DEPLOY,
    catalogue,
    compose_pools,
    setting_variables,
    settings_from,
    worker_pools,
)

Compose = dict[str, Any]

#: Top-level keys of the Compose specification, and service keys this file may use.
TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "volumes", "ports", "depends_on",
    "healthcheck", "restart", "deploy", "read_only", "tmpfs", "cap_drop", "security_opt",
    "stop_grace_period", "profiles", "user",
}  # fmt: skip
PINNED = re.compile(r"^[\w./-]+:[\w.-]+$")


def callboard_services(compose: Compose) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s["image"].split(":")[0] == "callboard"}


def test_the_file_has_only_compose_keys_and_extension_fields(compose: Compose) -> None:
    assert set(compose) - TOP_LEVEL <= {key for key in compose if key.startswith("x-")}
    for name, service in compose["services"].items():
        assert set(service) <= SERVICE_KEYS, (name, set(service) - SERVICE_KEYS)
        assert PINNED.match(service["image"]) and not service["image"].endswith(":latest"), name


def test_the_stack_has_every_part(compose: Compose) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "scheduler", "prometheus", "grafana"} <= set(services)
    assert services["scheduler"]["deploy"]["replicas"] == 2  # two replicas show the lease
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_pools_consume_every_queue_once_as_on_kubernetes(compose: Compose, rendered: Any) -> None:
    pools = compose_pools(compose)
    assert sorted(q for pool in pools.values() for q in pool.queues) == sorted(catalogue())
    # The same pools as deploy/k8s (names aside): the two never drift apart.
    kubernetes = {pool.queues: pool for pool in worker_pools(rendered["prod"]).values()}
    for pool in pools.values():
        twin = kubernetes[pool.queues]
        assert (pool.processes, pool.threads, pool.shutdown_timeout, pool.grace) == (
            twin.processes,
            twin.threads,
            twin.shutdown_timeout,
            twin.grace,
        ), pool.name


def test_callboard_commands_parse_and_variables_are_settings(compose: Compose) -> None:
    known = setting_variables()
    for name, service in callboard_services(compose).items():
        if service["command"] != ["--help"]:
            build_parser().parse_args(service["command"])  # unknown options exit 2 here
        variables = {key for key in service["environment"] if key.startswith("CALLBOARD_")}
        assert variables == set(service["environment"]), name
        assert variables - known == set(), name
        settings_from(service["environment"])  # every value valid, too
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"], name
        assert service["cap_drop"] == ["ALL"], name


def test_dependencies_exist_and_wait_for_health(compose: Compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other in depends:
            assert other in services, (name, other)
            if isinstance(depends, dict):
                condition = depends[other]["condition"]
                if condition == "service_healthy":
                    assert "test" in services[other]["healthcheck"], (name, other)
    for name in callboard_services(compose):
        if name not in ("migrate", "cli"):
            assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_healthchecks_ask_the_metrics_port_the_processes_serve(compose: Compose) -> None:
    for name, service in callboard_services(compose).items():
        port = service["environment"]["CALLBOARD_METRICS_PORT"]
        health = service["healthcheck"]
        if health.get("disable"):
            continue
        assert f"http://127.0.0.1:{port}/healthz" in " ".join(health["test"]), name


def test_ports_are_unique_and_volumes_exist(compose: Compose) -> None:
    published = [p.split(":")[0] for s in compose["services"].values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))
    named = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).exists(), (name, source)
            else:
                assert source in named, (name, source)


def test_prometheus_scrapes_every_callboard_service_and_loads_the_rules(compose: Compose) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = dict(volume.split(":")[:2] for volume in prometheus["volumes"])
    config_path = COMPOSE_FILE.parent / next(s for s, t in mounts.items() if t.endswith("prometheus.yml"))
    config = yaml.safe_load(config_path.read_text())
    # The rule file is mounted next to the configuration, under the name it loads.
    (rules,) = config["rule_files"]
    assert mounts["../prometheus/rules.yaml"] == f"/etc/prometheus/{rules}"
    scraped = {}
    for job in config["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            scraped.update(dict.fromkeys(sd["names"], sd["port"]))
    expected = {
        name: int(service["environment"]["CALLBOARD_METRICS_PORT"])
        for name, service in callboard_services(compose).items()
        if service["command"][0] in ("worker", "scheduler")
    }
    assert scraped == expected


def test_grafana_provisions_the_shipped_dashboards_and_data_source(compose: Compose) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "callboard.yaml").read_text()
    )
    assert mounts["../grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["../grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["../grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]
