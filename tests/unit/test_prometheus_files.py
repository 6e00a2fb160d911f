"""The alerting rules and the Grafana dashboard that ship in runbooks/prometheus/ name only series that
`bluegreen serve` exports (read from the collector itself), and every rule is tested firing and not."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bluegreen.orchestrator.api.metrics import render
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.settings.model import load_settings
from tests.conftest import write_settings

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "runbooks" / "prometheus"
# PromQL words that are not series; functions are told apart by the parenthesis after them.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "inf", "nan"}
GRAFANA = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression selects (Grafana's interval variables allowed)."""
    for variable, duration in GRAFANA.items():
        expr = expr.replace(variable, duration)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if word.lower() in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def test_the_expression_reader_finds_series_and_only_series() -> None:
    expr = ('histogram_quantile(0.95, sum by (deployment, le) (rate(a_bucket{x="y", d=~"$deployment"}'
            '[$__rate_interval]))) / on (deployment) group_left b offset 5m > 26 * 3600 unless c_total == bool 1e3')
    assert metric_names(expr) == {"a_bucket", "b", "c_total"}
    assert metric_names("absent(bluegreen_deployment_up)") == {"bluegreen_deployment_up"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name serve exports, from a render over a fresh state directory with nothing running."""
    root = tmp_path_factory.mktemp("deployment")
    settings = load_settings(write_settings(root, f'project = "names"\n\n[docker]\nhost = "unix://{root}/none.sock"\n'
                                                  '\n[backups]\npitr = "litestream"\n'))
    text = render([Deployment(settings, actor="tester")]).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    assert "bluegreen_rollback_duration_seconds_bucket" in names and "bluegreen_operations_total" in names
    return names


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((FILES / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((FILES / "grafana-dashboard.json").read_text())  # type: ignore[no-any-return]


def panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def test_every_rule_names_only_series_serve_exports(exported: set[str]) -> None:
    for rule in rules():
        unknown = metric_names(rule["expr"]) - exported
        assert metric_names(rule["expr"]) and not unknown, f"{rule['alert']}: {sorted(unknown)} is not exported"


def test_every_rule_has_a_severity_a_for_and_names_the_deployment_runbook_and_command() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) >= 12
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert "for" in rule, rule["alert"]
        notes = rule["annotations"]
        runbook = notes["runbook"]
        assert (REPO / runbook).is_file() and runbook in notes["description"], rule["alert"]
        assert "`bluegreen " in notes["description"] or "bluegreen serve" in notes["description"], rule["alert"]
        if "absent(" not in rule["expr"]:
            assert "{{ $labels.deployment }}" in notes["summary"] + notes["description"], rule["alert"]


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load((FILES / "rules_test.yml").read_text())
    assert doc["rule_files"] == ["rules.yml"]
    cases = [case for test in doc["tests"] for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']} is never tested firing"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']} is never tested quiet"


def test_every_dashboard_query_names_only_series_serve_exports(exported: set[str]) -> None:
    doc = dashboard()
    alert_names = {rule["alert"] for rule in rules()}
    queried = 0
    for panel in panels(doc):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            if "ALERTS" in names:  # Prometheus's series of the shipped rules' alerts, and only those
                assert re.search(r'alertname=~"Bluegreen\.\*"', target["expr"]), target["expr"]
                assert all(name.startswith("Bluegreen") for name in alert_names)
                names.discard("ALERTS")
            unknown = names - exported
            assert not unknown, f"panel {panel['title']!r}: {sorted(unknown)} is not exported"
            queried += bool(names)
    assert queried >= 20
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            [(metric, label)] = re.findall(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert metric in exported and label == "deployment"


def test_the_dashboard_is_an_importable_grafana_model_with_a_deployment_variable() -> None:
    doc = dashboard()
    assert doc["title"] and doc["uid"] and isinstance(doc["schemaVersion"], int)
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["deployment"]["definition"] == "label_values(bluegreen_live, deployment)"
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    covered: dict[int, set[int]] = {}  # the 24-column grid: no two panels on one cell
    for panel in panels(doc):
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24 and box["h"] > 0, panel["title"]
        for row in range(box["y"], box["y"] + box["h"]):
            cells = set(range(box["x"], box["x"] + box["w"]))
            assert not covered.get(row, set()) & cells, f"{panel['title']!r} overlaps another panel"
            covered.setdefault(row, set()).update(cells)
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"], panel["title"]
            assert 'deployment=~"$deployment"' in target["expr"], panel["title"]
    titles = " ".join(p["title"].lower() for p in panels(doc))
    for topic in ("live colour", "weight", "rollback duration", "drill", "backup", "archive", "alerts", "proxy"):
        assert topic in titles, topic
