"""The Kubernetes manifests (deploy/k8s), rendered offline by ``kubectl kustomize`` for both
overlays: every object valid for the pinned Kubernetes version, custom resources valid against
the vendored schemas, and what the objects say in agreement with the code they run."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from config.settings import Settings
from service.metrics.definitions import QUEUE_DEPTH, QUEUE_IN_FLIGHT
from tests.deploy.manifests import (
    DEPLOY,
    K8S,
    REPO,
    SHUTDOWN_MARGIN,
    callboard_containers,
    catalogue,
    hard_limit,
    objects,
    pod_specs,
    run,
    setting_variables,
    settings_from,
    tool,
    worker_pools,
)

Rendered = dict[str, list[dict[str, Any]]]

#: The Kubernetes version the manifests are validated for (kubernetes-validate bundles schemas
#: of 1.25 to 1.37 offline); the oldest minor that providers still support in standard support.
KUBERNETES_VERSION = "1.33.0"

#: Custom resources: kind -> schema vendored under deploy/schemas/.
CRD_SCHEMAS = {
    "ScaledObject": "keda.sh-v1alpha1-scaledobject.json",
    "ServiceMonitor": "monitoring.coreos.com-v1-servicemonitor.json",
    "PrometheusRule": "monitoring.coreos.com-v1-prometheusrule.json",
}

SECRET = "callboard-secrets"


def crd_validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((DEPLOY / "schemas" / CRD_SCHEMAS[kind]).read_text()))


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in items}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# -- rendering and schemas ---------------------------------------------------------------------


def test_both_overlays_render_every_part(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        kinds = {item["kind"] for item in items}
        assert {
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Job",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
        } <= kinds, overlay
        namespace = by_name(objects(items, "Namespace"))
        assert all(
            item["metadata"].get("namespace") in namespace for item in items if item["kind"] != "Namespace"
        ), f"{overlay}: an object outside the overlay's namespace"
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule"} <= {i["kind"] for i in rendered["prod"]}
    assert "HorizontalPodAutoscaler" in {i["kind"] for i in rendered["dev"]}


def test_every_object_is_valid_for_the_pinned_kubernetes_version(
    rendered: Rendered, rendered_text: dict[str, str], tmp_path: Path
) -> None:
    files = []
    for overlay, text in rendered_text.items():
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(text)
        files.append(str(path))

    result = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *files)

    assert result.returncode == 0, result.stdout + result.stderr
    passed = re.findall(r"^INFO .* passed for resource (\S+) against", result.stdout, re.M)
    warned = re.findall(r"^WARN .* for kind (\w+) with api version", result.stdout, re.M)
    builtin = [item for items in rendered.values() for item in items if item["kind"] not in CRD_SCHEMAS]
    assert len(passed) == len(builtin), result.stdout
    # Only the custom resources lack a bundled schema; they are checked below.
    assert set(warned) <= set(CRD_SCHEMAS), result.stdout


def test_the_validator_is_strict(tmp_path: Path) -> None:
    # Given a Deployment with a misspelt field
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "x"},
                "spec": {
                    "selector": {"matchLabels": {"a": "b"}},
                    "template": {
                        "metadata": {"labels": {"a": "b"}},
                        "spec": {"containers": [{"name": "x", "image": "x", "arg": ["worker"]}]},
                    },
                },
            }
        )
    )
    # When it is validated as the manifests are, Then it is refused
    result = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(bad))
    assert result.returncode != 0 and "arg" in result.stdout, result.stdout


def test_custom_resources_match_their_vendored_schemas(rendered: Rendered) -> None:
    checked = set()
    for items in rendered.values():
        for item in items:
            if item["kind"] in CRD_SCHEMAS:
                errors = [e.message for e in crd_validator(item["kind"]).iter_errors(item)]
                assert not errors, f"{item['kind']}/{item['metadata']['name']}: {errors}"
                checked.add(item["kind"])
    assert checked == set(CRD_SCHEMAS)


@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("ScaledObject", {"scaleTargetRef": {"name": "x"}, "triggers": [], "minReplicas": 1}),
        (
            "ScaledObject",
            {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "p", "metadata": {"a": 1}}]},
        ),
        ("ServiceMonitor", {"selector": {}, "endpoints": [{"port": "m", "intervall": "15s"}]}),
        ("PrometheusRule", {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}),
    ],
)
def test_vendored_schemas_refuse_what_the_crds_refuse(kind: str, spec: dict[str, Any]) -> None:
    group = {"ScaledObject": "keda.sh/v1alpha1"}.get(kind, "monitoring.coreos.com/v1")
    item = {"apiVersion": group, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    assert list(crd_validator(kind).iter_errors(item))


# -- the pools and the queue catalogue ---------------------------------------------------------


def test_every_catalogue_queue_is_consumed_by_exactly_one_pool(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        consumed = [queue for pool in worker_pools(items).values() for queue in pool.queues]
        assert sorted(consumed) == sorted(catalogue()), overlay


def test_grace_periods_cover_the_longest_hard_limit_plus_the_shutdown_margin(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        for pool in worker_pools(items).values():
            longest = max(hard_limit(queue) for queue in pool.queues)
            # The worker waits this long for running messages before handing them back...
            assert pool.shutdown_timeout >= longest, (overlay, pool)
            # ...and Kubernetes waits for that plus the stop itself before SIGKILL.
            assert pool.grace >= pool.shutdown_timeout + SHUTDOWN_MARGIN, (overlay, pool)


def test_worker_arguments_name_catalogue_queues_and_explicit_sizes(rendered: Rendered) -> None:
    for items in rendered.values():
        for pool in worker_pools(items).values():
            assert set(pool.queues) <= catalogue(), pool
            assert pool.processes >= 1 and pool.threads >= 1, pool


# -- probes, ports, services -----------------------------------------------------------------


def metrics_port_default() -> int:
    default = Settings.model_fields["metrics_port"].default
    assert isinstance(default, int)
    return default


def test_probes_and_ports_point_at_the_metrics_port_the_processes_serve(rendered: Rendered) -> None:
    port = metrics_port_default()
    for overlay, items in rendered.items():
        settings = next(
            c for c in objects(items, "ConfigMap") if c["metadata"]["name"].startswith("callboard-settings")
        )
        assert int(settings["data"]["CALLBOARD_METRICS_PORT"]) == port
        for workload, _, container in callboard_containers(items):
            if workload["kind"] == "Job":
                assert not any(key.endswith("Probe") for key in container), "a Job needs no probes"
                continue
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"metrics": port}, (overlay, workload["metadata"]["name"])
            probes = {
                kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")
            }
            assert {kind: probe["port"] for kind, probe in probes.items()} == dict.fromkeys(probes, "metrics")
            assert probes["liveness"]["path"] == "/healthz" and probes["startup"]["path"] == "/healthz"
            assert probes["readiness"]["path"] == "/readyz"


def test_probe_paths_are_served_by_the_health_server() -> None:
    # A real HealthServer, healthy: each path the manifests probe answers 200.
    import httpx

    from service.health.http import HealthServer

    server = HealthServer(
        "127.0.0.1", 0, metrics=lambda: b"", liveness=lambda: [], readiness=lambda: []
    ).start()
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(f"http://127.0.0.1:{server.port}{path}", timeout=5).status_code == 200, path
    finally:
        server.stop()


def test_services_and_the_service_monitor_reach_every_pod_on_the_metrics_port(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        services = [s for s in objects(items, "Service") if s["metadata"]["name"].startswith("callboard-")]
        for workload, _, _ in callboard_containers(items):
            if workload["kind"] != "Deployment":
                continue
            labels = workload["spec"]["template"]["metadata"]["labels"]
            matching = [s for s in services if selects(s["spec"]["selector"], labels)]
            assert len(matching) == 1, (overlay, workload["metadata"]["name"])
            assert matching[0]["spec"]["ports"] == [
                {
                    "name": "metrics",
                    "port": metrics_port_default(),
                    "targetPort": "metrics",
                    "protocol": "TCP",
                }
            ]
    (monitor,) = objects(rendered["prod"], "ServiceMonitor")
    scraped = [
        s
        for s in objects(rendered["prod"], "Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in scraped} == {
        "callboard-worker-metrics",
        "callboard-scheduler-metrics",
    }
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


# -- settings and secrets ----------------------------------------------------------------------


def test_every_callboard_variable_exists_in_the_settings_model(rendered: Rendered) -> None:
    known = setting_variables()
    for overlay, items in rendered.items():
        for workload, _, container in callboard_containers(items):
            names = {item["name"] for item in container.get("env", [])}
            for source in container.get("envFrom", []):
                name = source["configMapRef"]["name"]
                (config_map,) = [c for c in objects(items, "ConfigMap") if c["metadata"]["name"] == name]
                names |= set(config_map["data"])
            assert names, workload["metadata"]["name"]
            assert names - known == set(), f"{overlay} {workload['metadata']['name']}: not settings"


def test_every_value_loads_into_the_settings_model(rendered: Rendered) -> None:
    # Literal values and the ConfigMap, plus the dev Secret's values: a bad duration, port or
    # scheme fails here, not at the pod's start.
    import base64

    for items in rendered.values():
        secrets = {s["metadata"]["name"]: s.get("data", {}) for s in objects(items, "Secret")}
        for _, _, container in callboard_containers(items):
            variables: dict[str, str] = {}
            for source in container.get("envFrom", []):
                (config_map,) = [
                    c
                    for c in objects(items, "ConfigMap")
                    if c["metadata"]["name"] == source["configMapRef"]["name"]
                ]
                variables.update(config_map["data"])
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    variables[item["name"]] = item["value"]
                elif ref["key"] in secrets.get(ref["name"], {}):
                    variables[item["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
            settings = settings_from(variables)
            assert settings.metrics_port == metrics_port_default() or not container.get("ports")


def test_secrets_come_from_the_callboard_secret(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        secrets = {s["metadata"]["name"]: s for s in objects(items, "Secret")}
        for workload, _, container in callboard_containers(items):
            refs = {
                item["name"]: item["valueFrom"]["secretKeyRef"]
                for item in container.get("env", [])
                if "secretKeyRef" in item.get("valueFrom", {})
            }
            assert "CALLBOARD_DATABASE_URL" in refs, workload["metadata"]["name"]
            for ref in refs.values():
                assert ref["name"].startswith(SECRET), ref
                if overlay == "dev" and not ref.get("optional"):  # dev generates its Secret
                    assert ref["key"] in secrets[ref["name"]]["data"], ref
        config_maps = objects(items, "ConfigMap")
        leaked = [k for c in config_maps for k in c["data"] if re.search(r"URL|KEY|DSN|PASSWORD", k)]
        assert leaked == [], f"{overlay}: secrets belong in the Secret: {leaked}"


def test_the_schedule_config_map_is_the_shipped_schedule(rendered: Rendered) -> None:
    text = (REPO / "config" / "schedule.toml").read_text()
    for items in rendered.values():
        (schedule,) = [
            c for c in objects(items, "ConfigMap") if c["metadata"]["name"].startswith("callboard-sch")
        ]
        assert schedule["data"] == {"schedule.toml": text}


def test_generated_files_are_up_to_date() -> None:
    result = run(tool("python"), str(K8S / "sync.py"), "--check")
    assert result.returncode == 0, result.stderr


def test_the_prometheus_rule_carries_the_shipped_rules(rendered: Rendered) -> None:
    (rule,) = objects(rendered["prod"], "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((DEPLOY / "prometheus" / "rules.yaml").read_text())


# -- pods: security, resources, commands -------------------------------------------------------


def test_every_pod_is_locked_down(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        for workload, spec, container in callboard_containers(items):
            where = f"{overlay} {workload['metadata']['name']}"
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, where  # the image's USER
            assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert spec["automountServiceAccountToken"] is False, where
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], where


def test_the_image_entrypoint_runs_the_manifest_arguments(rendered: Rendered) -> None:
    # The containers set args only: the image's ENTRYPOINT ["callboard"] runs them.
    from service.cli.main import build_parser

    seen = set()
    for items in rendered.values():
        for workload, _, container in callboard_containers(items):
            assert "command" not in container, workload["metadata"]["name"]
            args = build_parser().parse_args(container["args"])  # unknown options exit 2 here
            assert callable(args.handler)
            seen.add(tuple(container["args"]))
    assert {args[0] for args in seen} == {"worker", "scheduler", "db"}
    # The console script's main(), as the image runs it, in one child process (one import for
    # all): each argument list plus --help exits 0 with the usage (argparse reads every
    # argument before --help, so a bad value of --processes fails here too).
    script = (
        "import contextlib, io, json, sys\n"
        "from service.cli.main import main\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    out = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(out):\n"
        "            main([*args, '--help'])\n"
        "    except SystemExit as stop:\n"
        "        print(json.dumps([args, stop.code, out.getvalue().startswith('usage: callboard')]))\n"
    )
    # Meanwhile, the console script the ENTRYPOINT names exists and dispatches.
    entrypoint = subprocess.Popen([tool("callboard"), "--help"], stdout=subprocess.DEVNULL)
    result = run(tool("python"), "-c", script, json.dumps(sorted(seen)))
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert answers == [[list(args), 0, True] for args in sorted(seen)], result.stdout + result.stderr
    assert entrypoint.wait(timeout=120) == 0


def test_the_scheduler_runs_two_replicas_and_the_migration_job_upgrades(rendered: Rendered) -> None:
    for items in rendered.values():
        deployments = by_name(objects(items, "Deployment"))
        assert deployments["callboard-scheduler"]["spec"]["replicas"] == 2
        assert deployments["callboard-scheduler"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "scheduler"
        ]
        (job,) = objects(items, "Job")
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_every_deployment_has_a_disruption_budget_of_one(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        budgets = objects(items, "PodDisruptionBudget")
        for workload, _, _ in callboard_containers(items):
            if workload["kind"] != "Deployment":
                continue
            labels = workload["spec"]["template"]["metadata"]["labels"]
            matching = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
            assert [b["spec"]["maxUnavailable"] for b in matching] == [1], (overlay, workload["metadata"])


def test_deployment_selectors_match_their_pods(rendered: Rendered) -> None:
    for items in rendered.values():
        for workload, _ in pod_specs(items):
            if workload["kind"] == "Deployment":
                labels = workload["spec"]["template"]["metadata"]["labels"]
                assert selects(workload["spec"]["selector"]["matchLabels"], labels), workload["metadata"]


# -- autoscaling -------------------------------------------------------------------------------


def test_each_pool_has_one_autoscaler_and_never_scales_to_zero(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        targets: dict[str, list[str]] = {}
        for item in objects(items, "ScaledObject") + objects(items, "HorizontalPodAutoscaler"):
            targets.setdefault(item["spec"]["scaleTargetRef"]["name"], []).append(item["kind"])
            low = item["spec"].get("minReplicaCount", item["spec"].get("minReplicas"))
            assert low is not None and low >= 1, (overlay, item["metadata"]["name"])
        # One autoscaler per pool: KEDA's own HPA and a second one would fight.
        assert {name: len(kinds) for name, kinds in targets.items()} == dict.fromkeys(worker_pools(items), 1)


def test_keda_scales_each_pool_on_its_own_queues_backlog(rendered: Rendered) -> None:
    items = rendered["prod"]
    pools = worker_pools(items)
    for scaled in objects(items, "ScaledObject"):
        pool = pools[scaled["spec"]["scaleTargetRef"]["name"]]
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        selectors = re.findall(r"(\w+)\{([^}]*)\}", query)
        assert {metric for metric, _ in selectors} == {QUEUE_DEPTH._name, QUEUE_IN_FLIGHT._name}
        for _, matchers in selectors:
            labels = dict(re.findall(r'(\w+)=~?"([^"]*)"', matchers))
            assert labels["namespace"] == scaled["metadata"]["namespace"], "query of another namespace"
            assert labels["queue"].split("|") == list(pool.queues)
        # One message per worker thread of a pod.
        assert int(trigger["metadata"]["threshold"]) == pool.processes * pool.threads
        assert trigger["metadata"]["ignoreNullValues"] == "false"  # no gauges: fallback, not zero
        assert scaled["spec"]["fallback"]["replicas"] >= scaled["spec"]["minReplicaCount"]


# -- network -----------------------------------------------------------------------------------


def test_network_policies_cover_every_pod_and_open_smtp_to_messaging_only(rendered: Rendered) -> None:
    for overlay, items in rendered.items():
        policies = objects(items, "NetworkPolicy")
        for workload, _ in pod_specs(items):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            if labels.get("app.kubernetes.io/name") != "callboard":
                continue  # dev's throwaway Redis and PostgreSQL
            matching = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], labels)]
            ingress = [p for p in matching if "Ingress" in p["spec"]["policyTypes"]]
            assert ingress, (overlay, workload["metadata"]["name"])
            ports = {
                port["port"]
                for p in ingress
                for rule in p["spec"].get("ingress", [])
                for port in rule["ports"]
            }
            assert ports == {metrics_port_default()}
            egress = {
                port["port"]
                for p in matching
                for rule in p["spec"].get("egress", [])
                for port in rule["ports"]
            }
            smtp = {25, 465, 587} & egress
            assert bool(smtp) == (labels.get("callboard.dev/pool") == "messaging"), workload["metadata"]
            assert {53, 6379, 5432} <= egress
