"""The Prometheus rules and the Grafana dashboards: promtool accepts and unit-tests the rules,
every PromQL expression parses, and every metric they read is one Callboard exports.

promtool comes from the Debian package ``prometheus`` (``.ci/run`` installs it); without it these
tests skip, and fail under CALLBOARD_TEST_REQUIRE_ALL=1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from config.queues import QUEUES
from tests.conftest import unavailable
from tests.support import promql

ALERTS_DOC = promql.REPO / "docs" / "how-to" / "alerts.md"
METRICS_DOC = promql.REPO / "docs" / "reference" / "metrics.md"
DASHBOARDS_DOC = promql.REPO / "docs" / "how-to" / "dashboards.md"
PROVISIONING = promql.REPO / "deploy" / "grafana" / "provisioning"

DASHBOARD_FILES = (
    "callboard-dead-letters.json",
    "callboard-overview.json",
    "callboard-queues.json",
    "callboard-scheduler.json",
)
#: Labels a scrape adds to every series (Kubernetes: namespace, pod; everywhere: instance, job).
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job"})


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool not installed (apt-get install prometheus)")
    assert path is not None
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def normalized(text: str) -> str:
    return " ".join(text.split())


# -- rules ---------------------------------------------------------------------------------


def test_promtool_accepts_the_rules_and_counts_what_we_read(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(promql.RULES_FILE))

    assert result.returncode == 0, result.stdout + result.stderr
    # promtool's count and ours agree: the YAML reader of tests/support/promql.py reads it all.
    assert f"SUCCESS: {len(promql.rules())} rules found" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(promql.RULES_TEST_FILE))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    text = promql.RULES_TEST_FILE.read_text()
    cases = re.findall(r"alertname:\s*(\w+)\s*\n\s*exp_alerts:\s*(\[\])?", text)
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    alerts = {rule.name for rule in promql.rules() if rule.kind == "alert"}

    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a not-firing case"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_every_alert_has_for_severity_annotations_and_a_runbook() -> None:
    headings = set(re.findall(r"^## (\w+)\s*$", ALERTS_DOC.read_text(), flags=re.M))
    alerts = [rule for rule in promql.rules() if rule.kind == "alert"]

    assert len(alerts) >= 9
    for rule in alerts:
        assert rule.name.startswith("Callboard"), rule.name
        assert rule.for_ and re.fullmatch(r"\d+[smh]", rule.for_), rule.name
        assert rule.labels.get("severity") in {"critical", "warning"}, rule.name
        assert rule.annotations.get("summary"), rule.name
        assert rule.annotations.get("description"), rule.name
        assert rule.annotations.get("runbook_url") == f"docs/how-to/alerts.md#{rule.name.lower()}"
        assert rule.name in headings, f"docs/how-to/alerts.md has no '## {rule.name}' section"


def test_rules_read_only_exported_metrics_and_labels() -> None:
    exposed = promql.exposed_metrics()
    for rule in promql.rules():
        assert promql.metric_names(rule.expr) <= set(exposed), rule.name
        for metric, matchers in promql.selectors(rule.expr):
            assert set(matchers) <= exposed[metric] | TARGET_LABELS, (rule.name, metric)
        assert "$" not in rule.expr, rule.name


def test_rules_keep_the_namespace_label() -> None:
    """Every alert aggregates by namespace, so one Prometheus can watch several installations."""
    for rule in promql.rules():
        for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule.expr):
            labels = {label.strip() for label in clause.split(",") if label.strip()}
            assert not labels or "namespace" in labels, (rule.name, clause)


def test_prometheus_example_config_is_valid(promtool: str) -> None:
    result = run(promtool, "check", "config", str(promql.PROMETHEUS_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


# -- dashboards ----------------------------------------------------------------------------


def test_the_four_dashboards_are_valid_json_with_their_variables() -> None:
    boards = promql.dashboards()

    assert sorted(boards) == sorted(DASHBOARD_FILES)
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    for name, board in boards.items():
        assert board["schemaVersion"] >= 36, name
        assert "callboard" in board["tags"], name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        assert variables["datasource"]["query"] == "prometheus", name
        assert set(variables) >= {"datasource", "namespace"}, name
        assert "label_values(callboard_messages_total, namespace)" in str(variables["namespace"]["query"])
        if name != "callboard-scheduler.json":
            assert set(variables) >= {"queue", "actor"}, name
        for label in ("namespace", "queue", "actor", "entry"):
            if label in variables:
                variable = variables[label]
                assert variable["includeAll"] and variable["allValue"] == ".*", (name, label)
                if label != "namespace":
                    assert variable["multi"], (name, label)
                assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ids = [panel["id"] for panel in promql.panels(board)]
        assert len(ids) == len(set(ids)), name


def test_every_panel_has_a_datasource_and_promql() -> None:
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for name, board in promql.dashboards().items():
        found = list(promql.panels(board))
        assert found, name
        for panel in found:
            where = f"{name}: {panel.get('title')}"
            assert panel.get("datasource") == datasource, where
            assert panel.get("targets"), where
            assert panel.get("description"), where
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, where
            for target in panel["targets"]:
                assert target.get("datasource") == datasource, where
                assert target.get("expr", "").strip(), where


def test_dashboards_read_only_exported_metrics_and_labels() -> None:
    exposed = promql.exposed_metrics()
    for title, _, target in promql.dashboard_targets():
        expr = target["expr"]
        names = promql.metric_names(promql.substitute(expr))
        assert names, title
        assert names <= set(exposed), (title, names - set(exposed))
        for metric, matchers in promql.selectors(expr):
            assert set(matchers) <= exposed[metric] | TARGET_LABELS, (title, metric)


def test_every_query_filters_by_the_dashboards_variables() -> None:
    """namespace everywhere; queue, actor and entry wherever the metric has that label."""
    exposed = promql.exposed_metrics()
    for name, board in promql.dashboards().items():
        defined = {v["name"] for v in board["templating"]["list"]}
        for panel in promql.panels(board):
            for target in panel["targets"]:
                expr, where = target["expr"], f"{name}: {panel['title']}"
                assert promql.bare_metrics(expr) == set(), (where, "selector without {...}")
                assert promql.variables_used(expr) <= defined | set(promql.INTERVAL_VARIABLES), where
                for metric, matchers in promql.selectors(expr):
                    for label in ("namespace", "queue", "actor", "entry"):
                        if label in defined and (label == "namespace" or label in exposed[metric]):
                            assert matchers.get(label) == ("=~", f"${label}"), (where, metric, label)


def test_every_dashboard_expression_parses(promtool: str, tmp_path: Path) -> None:
    expressions = promql.dashboard_expressions("5m")
    rules_file = tmp_path / "dashboards.rules.yaml"
    rules_file.write_text(promql.recording_rules_file(expressions))

    result = run(promtool, "check", "rules", str(rules_file))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in result.stdout


def test_rule_expressions_as_read_parse(promtool: str, tmp_path: Path) -> None:
    """What rule_expressions() hands to the evaluation tests is PromQL promtool accepts."""
    rules_file = tmp_path / "rules.exprs.yaml"
    rules_file.write_text(promql.recording_rules_file(promql.rule_expressions()))

    result = run(promtool, "check", "rules", str(rules_file))

    assert result.returncode == 0, result.stdout + result.stderr


def test_sla_breach_panel_is_the_expression_the_rule_unit_tests_check() -> None:
    (expr,) = [
        target["expr"]
        for title, panel, target in promql.dashboard_targets()
        if title.startswith("callboard-overview.json") and "over the SLA" in panel["title"]
    ]

    assert normalized(promql.substitute(expr, "5m")) in normalized(promql.RULES_TEST_FILE.read_text())


def test_every_queue_sla_is_a_wait_bucket() -> None:
    """The SLA-breach panel and alert read the SLA's own bucket (definitions.wait_buckets)."""
    from service.metrics.definitions import wait_buckets

    assert {float(spec.sla_seconds) for spec in QUEUES.values()} <= set(wait_buckets())


def test_evaluation_helpers_substitute_every_variable() -> None:
    expressions = promql.dashboard_expressions()
    rule_exprs = promql.rule_expressions()

    assert len(expressions) == len(promql.dashboard_targets()) > 40
    assert len(rule_exprs) == len(promql.rules())
    for title, expr in expressions + rule_exprs:
        assert not re.search(r"\$(?!1\b)", expr), title
    assert any("[1m]" in expr for _, expr in expressions)


def test_provisioning_points_at_the_dashboards_folder() -> None:
    provider = (PROVISIONING / "dashboards" / "callboard.yaml").read_text()
    datasource = (PROVISIONING / "datasources" / "prometheus.yaml").read_text()

    assert re.search(r"^\s+path: /var/lib/grafana/dashboards/callboard\s*$", provider, flags=re.M)
    assert re.search(r"^\s+type: prometheus\s*$", datasource, flags=re.M)
    assert re.search(r"^\s+timeInterval: 15s\s*$", datasource, flags=re.M)
    assert "scrape_interval: 15s" in promql.PROMETHEUS_CONFIG.read_text()


# -- docs ----------------------------------------------------------------------------------


def test_metrics_reference_lists_every_metric() -> None:
    text = METRICS_DOC.read_text()
    for family, kind in promql.families().items():
        exposed = f"{family}_total" if kind == "counter" else family
        assert f"`{exposed}`" in text, exposed


def test_dashboards_doc_names_every_dashboard() -> None:
    text = DASHBOARDS_DOC.read_text()
    for name, board in promql.dashboards().items():
        assert name in text and board["title"] in text, name
