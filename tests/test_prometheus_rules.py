"""The shipped Prometheus rules pass `promtool check rules` and their unit tests (`promtool test rules`),
and every query of the Grafana dashboard parses as PromQL (promtool, on recording rules made of them)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, component_missing

FILES = REPO / "runbooks" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        component_missing("promtool is not installed (Debian's prometheus package has it; scripts/provision.sh "
                          "installs it)")
    return found


def run(promtool: str, *args: str, cwd: Path = FILES) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_rules_pass_promtool_check(promtool: str) -> None:
    checked = run(promtool, "check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 14 rules found" in checked.stdout


def test_the_rules_pass_their_unit_tests(promtool: str) -> None:
    tested = run(promtool, "test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_wrong_threshold_fails_the_rule_tests(promtool: str, tmp_path: Path) -> None:
    """The tests can fail: an hour read as ten hours is caught."""
    rules = (FILES / "rules.yml").read_text()
    assert "bluegreen_behind_newest_seconds > 3600" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("bluegreen_behind_newest_seconds > 3600",
                                                      "bluegreen_behind_newest_seconds > 36000"))
    shutil.copy(FILES / "rules_test.yml", tmp_path / "rules_test.yml")
    tested = run(promtool, "test", "rules", "rules_test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "BluegreenRolledBackForAnHour" in tested.stdout + tested.stderr


def test_every_dashboard_query_parses_as_promql(promtool: str, tmp_path: Path) -> None:
    doc = json.loads((FILES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    rules = []
    for i, expr in enumerate(exprs):
        for variable, value in (("$__rate_interval", "5m"), ("$__range", "1h"), ("$deployment", ".*")):
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(promtool, "check", "rules", "dashboard.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules[0]["expr"] = rules[0]["expr"].replace(")", "", 1)  # the check can fail: a parenthesis missing
    (tmp_path / "broken.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert run(promtool, "check", "rules", "broken.yml", cwd=tmp_path).returncode != 0
