"""The metrics for the shipped alerts, after real releases and rollbacks (real Docker and HAProxy):
how long the live version has not been the newest promoted one, and whether the baseline serves."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Project, wait_for


def scrape(project: Project, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET /metrics as serve renders it for this deployment: name -> sorted labels -> value."""
    from bluegreen.orchestrator.api.metrics import render
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.settings.model import load_settings

    for key, value in project.env.items():
        monkeypatch.setenv(key, value)
    dep = Deployment(load_settings(project.root / "bluegreen.toml"), actor="tester")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(render([dep]).decode()):
        for s in family.samples:
            labels = dict(s.labels)
            assert labels.pop("deployment") == labels.pop("project") == project.name
            out.setdefault(s.name, {})[tuple(sorted(labels.items()))] = s.value
    return out


def gauge(project: Project, monkeypatch: pytest.MonkeyPatch, name: str) -> float:
    [value] = scrape(project, monkeypatch)[name].values()
    return value


def test_behind_newest_counts_from_a_rollback_and_is_zero_again_after_the_next_promotion(
        project: Project, docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    project.env["BLUEGREEN_RELEASE__BAKE"] = "0.2s"
    assert project.run("up").code == 0
    assert project.run("release", "bluegreen-model:v2", "--steps", "100").code == 0
    first = scrape(project, monkeypatch)
    assert first["bluegreen_behind_newest_seconds"] == {(): 0.0}
    assert first["bluegreen_proxy_up"] == {(): 1.0} and first["bluegreen_deployment_up"] == {(): 1.0}
    assert first["bluegreen_weight_percent"] == {(("colour", "blue"),): 0.0, (("colour", "green"),): 100.0}
    assert first["bluegreen_environment_info"][(("colour", "green"), ("variant", "model"), ("version", "v2"))] == 1

    before = time.time()
    assert project.run("rollback").code == 0
    assert wait_for(lambda: gauge(project, monkeypatch, "bluegreen_behind_newest_seconds") > 0, timeout=10)
    behind = gauge(project, monkeypatch, "bluegreen_behind_newest_seconds")
    assert behind <= time.time() - before + 1  # from the rollback (the journal keeps whole seconds), not earlier
    assert gauge(project, monkeypatch, "bluegreen_on_baseline") == 0

    assert project.run("release", "bluegreen-model:v2", "--steps", "100").code == 0
    assert gauge(project, monkeypatch, "bluegreen_behind_newest_seconds") == 0


def test_on_baseline_while_the_live_colour_serves_the_baseline_variant(
        project: Project, docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert project.run("up").code == 0
    assert gauge(project, monkeypatch, "bluegreen_on_baseline") == 0
    rolled = project.run("rollback", "--to", "baseline")
    assert rolled.code == 0, rolled.err
    after = scrape(project, monkeypatch)
    assert after["bluegreen_on_baseline"] == {(): 1.0}
    live = next(dict(k)["colour"] for k, v in after["bluegreen_live"].items() if v == 1)
    assert after["bluegreen_environment_info"][(("colour", live), ("variant", "baseline"), ("version", "v1"))] == 1
    assert wait_for(lambda: gauge(project, monkeypatch, "bluegreen_behind_newest_seconds") > 0, timeout=10)

    assert project.run("rollback").code == 0  # back to the model, warm
    back = scrape(project, monkeypatch)
    assert back["bluegreen_on_baseline"] == {(): 0.0} and back["bluegreen_behind_newest_seconds"] == {(): 0.0}
