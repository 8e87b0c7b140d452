"""The PromQL of the Grafana dashboards and the Prometheus rules, for tests to check and evaluate.

* :func:`dashboard_expressions` and :func:`rule_expressions` give ``(title, expr)`` pairs ready
  to evaluate on a real Prometheus (Grafana variables substituted).
* :func:`exposed_metrics` is the metric contract of ``service/metrics/definitions.py`` as a
  scrape shows it (counters with ``_total``, histograms with ``_bucket/_sum/_count``), with the
  labels of each series.
* :func:`metric_names` and :func:`selectors` read an expression's metric names and matchers.

The rules file is read by :func:`rules`, a reader for the YAML subset ``rules.yaml`` is written in
(block mappings and sequences, plain, quoted, literal and folded scalars, one-line flow
mappings), so the tests need no YAML library; the tests check its result against promtool's
own count of rules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"
RULES_FILE = REPO / "deploy" / "prometheus" / "rules.yaml"
RULES_TEST_FILE = REPO / "deploy" / "prometheus" / "rules.test.yaml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"

#: Dashboard variables that select label values (multi-value or All: always used with ``=~``).
LABEL_VARIABLES = ("namespace", "queue", "actor", "entry")
#: Grafana's interval variables.
INTERVAL_VARIABLES = ("__rate_interval", "__range", "__interval")

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


# -- dashboards ----------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON file, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of ``dashboard`` that shows data (rows are containers and are left out)."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def substitute(expr: str, interval: str = "1m") -> str:
    """``expr`` with Grafana's variables replaced for evaluation: label variables by ``.*``
    (what "All" sends), interval variables by ``interval``. ``$1`` (a label_replace group) is
    left alone; any other variable is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in LABEL_VARIABLES:
            return ".*"
        if name in INTERVAL_VARIABLES:
            return interval
        if name.isdigit():
            return match.group(0)
        raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


def variables_used(expr: str) -> set[str]:
    """The Grafana variables ``expr`` refers to (``$1``-style groups left out)."""
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(expr)} - {str(n) for n in range(10)}


def dashboard_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(title, panel, target)`` for every query of every dashboard, as written."""
    found = []
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                title = f"{name}: {panel.get('title')} [{target.get('refId')}]"
                found.append((title, panel, target))
    return found


def dashboard_expressions(interval: str = "1m") -> list[tuple[str, str]]:
    """``(title, expr)`` of every dashboard query, variables substituted for evaluation
    (``$namespace``, ``$queue``, ``$actor``, ``$entry`` by ``.*``; ``$__rate_interval``,
    ``$__range`` and ``$__interval`` by ``interval``)."""
    return [(title, substitute(target["expr"], interval)) for title, _, target in dashboard_targets()]


# -- rules ---------------------------------------------------------------------------------


@dataclass
class Rule:
    """One rule of ``rules.yaml``."""

    group: str
    kind: str  # "alert" or "record"
    name: str
    expr: str
    for_: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def rules(path: Path = RULES_FILE) -> list[Rule]:
    """Every rule of a Prometheus rule file, in file order."""
    document = _parse_yaml(path.read_text())
    found = []
    for group in document["groups"]:
        for item in group["rules"]:
            kind = "alert" if "alert" in item else "record"
            found.append(
                Rule(
                    group=group["name"],
                    kind=kind,
                    name=item[kind],
                    expr=item["expr"],
                    for_=item.get("for"),
                    labels=dict(item.get("labels") or {}),
                    annotations=dict(item.get("annotations") or {}),
                )
            )
    return found


def rule_expressions() -> list[tuple[str, str]]:
    """``(rule name, expr)`` of every alerting and recording rule of ``rules.yaml``."""
    return [(rule.name, rule.expr) for rule in rules()]


def recording_rules_file(expressions: list[tuple[str, str]]) -> str:
    """A rule file with each expression as a recording rule (``promtool check rules`` then tells
    whether every one parses)."""
    lines = ["groups:", "  - name: expressions", "    rules:"]
    for index, (title, expr) in enumerate(expressions):
        lines.append(f"      # {title}")
        lines.append(f"      - record: callboard_check:expr_{index}")
        lines.append(f"        expr: {json.dumps(expr)}")
    return "\n".join(lines) + "\n"


# -- metrics -------------------------------------------------------------------------------


def _definitions() -> list[tuple[str, str, frozenset[str]]]:
    """``(family name, type, label names)`` of every metric in ``service/metrics/definitions.py``."""
    from prometheus_client.metrics import MetricWrapperBase

    from service.metrics import definitions

    return [
        (value._name, str(value._type), frozenset(value._labelnames))
        for value in vars(definitions).values()
        if isinstance(value, MetricWrapperBase)
    ]


def families() -> dict[str, str]:
    """Every metric family of the definitions (``callboard_messages``), with its type."""
    return {name: kind for name, kind, _ in _definitions()}


def exposed_metrics() -> dict[str, frozenset[str]]:
    """Every series name the definitions expose, as a scrape shows it, with its label names:
    counters as ``_total`` (and ``_created``), histograms as ``_bucket`` (with ``le``), ``_sum``,
    ``_count`` (and ``_created``), gauges under their own name."""
    exposed: dict[str, frozenset[str]] = {}
    for name, kind, labels in _definitions():
        if kind == "counter":
            exposed.update({f"{name}_total": labels, f"{name}_created": labels})
        elif kind == "histogram":
            exposed[f"{name}_bucket"] = labels | {"le"}
            exposed.update({f"{name}_{suffix}": labels for suffix in ("sum", "count", "created")})
        elif kind == "gauge":
            exposed[name] = labels
        else:
            raise AssertionError(f"{name}: metric type {kind} not handled")
    return exposed


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
             "offset", "bool", "inf", "nan", "atan2"}  # fmt: skip
_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, label names and strings
    left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LIST.sub("", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """``(metric, {label: (operator, value)})`` of every ``metric{...}`` selector in ``expr``."""
    found = []
    for match in _SELECTOR.finditer(expr):
        matchers = {label: (op, value) for label, op, value in _MATCHER.findall(match.group(2))}
        found.append((match.group(1), matchers))
    return found


def bare_metrics(expr: str) -> set[str]:
    """Metric names selected without any ``{...}`` matcher."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _LABEL_LIST.sub("", text)
    return {
        name
        for name in re.findall(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*[({])", text)
        if name.lower() not in _KEYWORDS
    }


# -- a reader for the YAML subset of the rule files ----------------------------------------


def _parse_yaml(text: str) -> Any:
    lines = [line.rstrip() for line in text.splitlines()]
    value, index = _node(lines, 0, 0)
    if _next_content(lines, index) < len(lines):
        raise ValueError(f"unexpected content at line {_next_content(lines, index) + 1}")
    return value


def _is_blank(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _next_content(lines: list[str], index: int) -> int:
    while index < len(lines) and _is_blank(lines[index]):
        index += 1
    return index


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _node(lines: list[str], index: int, minimum: int) -> tuple[Any, int]:
    """The block node starting at the next content line, whose indent must be >= ``minimum``."""
    index = _next_content(lines, index)
    if index >= len(lines) or _indent(lines[index]) < minimum:
        return None, index
    indent = _indent(lines[index])
    if lines[index].lstrip().startswith("- ") or lines[index].strip() == "-":
        return _sequence(lines, index, indent)
    return _mapping(lines, index, indent)


def _sequence(lines: list[str], index: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while True:
        index = _next_content(lines, index)
        if (
            index >= len(lines)
            or _indent(lines[index]) != indent
            or not lines[index].lstrip().startswith("-")
        ):
            return items, index
        rest = lines[index][indent + 1 :]
        if not rest.strip():
            value, index = _node(lines, index + 1, indent + 1)
        elif re.match(r"\s+[^\s#'\"{\[][^:]*:(\s|$)", rest) or re.match(r"\s+['\"][^'\"]*['\"]:(\s|$)", rest):
            # "- key: value" opens a mapping whose keys sit at the column after "- "
            inner = indent + 1 + _indent(rest)
            lines = [*lines[:index], " " * inner + rest.lstrip(), *lines[index + 1 :]]
            value, index = _mapping(lines, index, inner)
        else:
            value, index = _scalar_or_block(lines, index, rest.strip(), indent)
        items.append(value)


def _mapping(lines: list[str], index: int, indent: int) -> tuple[dict[str, Any], int]:
    mapping: dict[str, Any] = {}
    while True:
        index = _next_content(lines, index)
        if index >= len(lines) or _indent(lines[index]) != indent or lines[index].lstrip().startswith("- "):
            return mapping, index
        match = re.match(r"""\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^:#][^:]*?)\s*:(?:\s+(.*))?$""", lines[index])
        if not match:
            raise ValueError(f"line {index + 1}: expected 'key: value': {lines[index]!r}")
        key = _plain_or_quoted(match.group(1))
        rest = (match.group(2) or "").strip()
        if key in mapping:
            raise ValueError(f"line {index + 1}: duplicate key {key!r}")
        if not rest or rest.startswith("#"):
            value, index = _node(lines, index + 1, indent + 1)
            if value is None and index < len(lines) and lines[index].lstrip().startswith("- "):
                value, index = _node(lines, index, indent)  # a sequence at the key's own indent
        else:
            value, index = _scalar_or_block(lines, index, rest, indent)
        mapping[key] = value


def _scalar_or_block(lines: list[str], index: int, text: str, indent: int) -> tuple[Any, int]:
    style = re.fullmatch(r"([|>])([+-]?)\s*(#.*)?", text)
    if style:
        return _block_scalar(lines, index + 1, indent, style.group(1), style.group(2))
    if text.startswith("{"):
        return _flow_mapping(text, index), index + 1
    if text.startswith("["):
        return _flow_sequence(text, index), index + 1
    return _plain_or_quoted(text), index + 1


def _block_scalar(lines: list[str], index: int, parent: int, style: str, chomp: str) -> tuple[str, int]:
    body: list[str] = []
    block_indent = None
    while index < len(lines):
        line = lines[index]
        if line.strip():
            if _indent(line) <= parent:
                break
            if block_indent is None:
                block_indent = _indent(line)
            if _indent(line) < block_indent:
                break
            body.append(line[block_indent:])
        else:
            body.append("")
        index += 1
    while body and not body[-1]:
        body.pop()
    if style == "|":
        value = "\n".join(body)
    else:
        paragraphs: list[list[str]] = [[]]
        for line in body:
            if line:
                paragraphs[-1].append(line)
            else:
                paragraphs.append([])
        value = "\n".join(" ".join(paragraph) for paragraph in paragraphs)
    if chomp != "-" and value:
        value += "\n"
    return value, index


def _plain_or_quoted(text: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        end = re.match(r'"(?:[^"\\]|\\.)*"', text)
        if not end:
            raise ValueError(f"unterminated string: {text!r}")
        return str(json.loads(end.group(0)))
    if text.startswith("'"):
        end = re.match(r"'(?:[^']|'')*'", text)
        if not end:
            raise ValueError(f"unterminated string: {text!r}")
        return end.group(0)[1:-1].replace("''", "'")
    return re.sub(r"\s+#.*$", "", text)


def _flow_mapping(text: str, index: int) -> dict[str, str]:
    inner = re.fullmatch(r"\{(.*)\}\s*(#.*)?", text)
    if not inner or any(c in inner.group(1) for c in "{}[]\"'"):
        raise ValueError(f"line {index + 1}: only simple one-line flow mappings are read: {text!r}")
    pairs = [part.split(":", 1) for part in inner.group(1).split(",") if part.strip()]
    return {key.strip(): value.strip() for key, value in pairs}


def _flow_sequence(text: str, index: int) -> list[str]:
    inner = re.fullmatch(r"\[(.*)\]\s*(#.*)?", text)
    if not inner or any(c in inner.group(1) for c in "{}[]\"'"):
        raise ValueError(f"line {index + 1}: only simple one-line flow sequences are read: {text!r}")
    return [part.strip() for part in inner.group(1).split(",") if part.strip()]
