"""`bluegreen demo`: the README's main job, end to end, with its own scratch deployment and ports, run as a
user runs it: from the wheel installed with its extra (``pip install 'bluegreen[compose]'``) in a clean
virtual environment, with the system's PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bluegreen.orchestrator.cli import app as cli
from bluegreen.orchestrator.demo import Demo, Summary, Traffic
from bluegreen.orchestrator.errors import BluegreenError
from bluegreen.orchestrator.proxy import Backend
from bluegreen.orchestrator.proxy.haproxy import HAProxy
from tests.conftest import BLUEGREEN, free_ports, wait_for
from tests.wheel import Installed


def test_the_demo_tells_the_whole_story_with_no_failed_request_and_no_row_lost(
        installed_with_compose: Installed, tmp_path: Path, docker_client: Any) -> None:
    proc = installed_with_compose.run("demo", "--json", cwd=tmp_path, timeout=600, env={"TMPDIR": str(tmp_path)})
    check_demo(proc, docker_client)


def check_demo(proc: subprocess.CompletedProcess[str], docker_client: Any) -> None:
    """What a successful ``bluegreen demo --json`` prints and leaves behind."""
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["problems"] == [], doc
    assert (doc["failed_requests"], doc["rows_lost"]) == (0, 0), doc["failures"]
    assert doc["requests"] > 1000 and doc["rows_before"] > 0 and doc["rows_kept"] == doc["rows_before"]
    assert doc["schema_reverted"] is True
    # The compose example: a consumer per colour switched with the traffic; every job done exactly once.
    assert doc["jobs"] > 100 and (doc["jobs_failed"], doc["jobs_lost"], doc["jobs_done_twice"]) == (0, 0, 0), doc
    for key in ("rollback_ms", "failover_ms", "alert_rollback_ms", "drill_rto_ms"):
        assert isinstance(doc[key], float) and doc[key] > 0, key
    assert doc["backups_verified"] == doc["backups_total"] >= 2
    assert [(r["version"], r["status"]) for r in doc["releases"]] == [("v2", "promoted"), ("v3", "rolled_back")]
    assert any(r["kind"] == "rollback" and r["reason"].startswith("alert") for r in doc["rollbacks"])
    assert "a real Alertmanager" in doc["alert_delivery"]
    # Progress went to stderr as it happened; and it cleaned up after itself.
    assert "release v3" in proc.stderr and "killing the live colour" in proc.stderr
    assert not Path(doc["directory"]).exists()
    left = docker_client.containers.list(all=True, filters={"label": f"bluegreen.project={doc['project']}"})
    assert [c.name for c in left] == []


HAPROXY_503 = "503 Service Unavailable No server is available to handle this request."


def lost_one_request(demo: Demo) -> Summary:
    """The one outcome a real demo cannot produce on demand: a request lost in the alert's rollback."""
    demo.phase = "alert rollback"
    s = demo.summary
    s.requests, s.failed_requests, s.failed_by_phase = 4979, 1, {"alert rollback": 1}
    s.failures = [{"at_s": 41.25, "time": "2026-11-29T23:00:41.250Z", "phase": "alert rollback", "status": 503,
                   "body": HAPROXY_503, "proxy": {"blue": "DOWN, weight 100", "green": "UP, weight 0"}}]
    return s


def stopped_by_an_error(demo: Demo) -> Summary:
    demo.phase = "up"
    raise BluegreenError("the image bluegreen-model:v1 is missing", "bluegreen images build")


def stopped_by_a_defect(demo: Demo) -> Summary:
    demo.phase = "drill"
    raise KeyError("rto_s")


@pytest.mark.parametrize(("run", "problem"), [
    (lost_one_request, "1 of 4,979 requests through the proxy failed (1 during alert rollback); the first at "
                       f"41.2 s: 503 {HAPROXY_503}"),
    (stopped_by_an_error, "the demo stopped during up: the image bluegreen-model:v1 is missing"),
    (stopped_by_a_defect, "the demo stopped during drill: KeyError: 'rto_s' (test_demo.py:"),
])
def test_a_failed_demo_prints_one_json_document_that_names_what_went_wrong(
        run: Any, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`bluegreen demo --json` that goes wrong: exactly one document on stdout (a script parses it),
    ``ok`` false with ``problems`` saying what and where, the error on stderr, a non-zero exit code."""
    monkeypatch.setattr(Demo, "run", run)
    monkeypatch.setattr(cli, "OPTIONS", cli.Options())
    monkeypatch.setattr(sys, "argv", ["bluegreen", "demo", "--json"])
    cli.register("demo")
    code = cli._run()
    out, err = capsys.readouterr()
    doc = json.loads(out)  # one document, nothing after it
    assert code == 1
    assert doc["ok"] is False
    [named] = doc["problems"]
    assert named.startswith(problem), named
    assert f"Error: the demo saw problems: {named}" in err and "Try: " in err
    assert not Path(doc["directory"]).exists()


def test_the_demo_records_each_failed_request_with_its_time_act_answer_and_what_the_proxy_saw(
        tmp_path: Path) -> None:
    """A real HAProxy whose only weighted server is down answers 503: the demo's traffic keeps each
    such request with when, during which act, the answer, and each server's state in the proxy."""
    proxy_port, blue_port, green_port = free_ports(3)
    proxy = HAProxy(tmp_path / "haproxy", "127.0.0.1", proxy_port,
                    [Backend("blue", "127.0.0.1", blue_port), Backend("green", "127.0.0.1", green_port)],
                    check_interval_ms=200)
    proxy.start({"blue": 100, "green": 0})
    try:
        assert wait_for(lambda: {s.status for s in proxy.stats().values()} == {"DOWN", "MAINT"}, timeout=5)
        act = "release v2"
        began = time.monotonic()
        traffic = Traffic(f"http://127.0.0.1:{proxy_port}", lambda: act,
                          lambda: {name: f"{s.status}, weight {s.weight}" for name, s in proxy.stats().items()},
                          began, threads=1)
        try:
            assert wait_for(lambda: len(traffic.failures) >= 3, timeout=10)
        finally:
            traffic.stop()
    finally:
        proxy.stop()
    first = traffic.failures[0]
    assert (first["phase"], first["status"]) == ("release v2", 503)
    assert "No server is available to handle this request" in first["body"]
    assert first["proxy"]["blue"] == "DOWN, weight 100" and first["proxy"]["green"] == "DOWN, weight 0"
    assert 0 <= first["at_s"] < time.monotonic() - began and first["time"].endswith("Z")
    assert traffic.by_phase == {"release v2": traffic.failed} and traffic.failed >= len(traffic.failures)


def test_the_fleet_demo_rolls_back_exactly_the_deployment_an_alert_names(docker_client: Any, tmp_path: Path) -> None:
    """`bluegreen demo --fleet --json`: three deployments behind one proxy, each released under traffic,
    an alert about one; that one is back on v1, the others on v2, no request failed anywhere."""
    proc = subprocess.run([*BLUEGREEN, "demo", "--fleet", "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["problems"] == [], doc
    assert doc["proxy_processes"] == {"running": 2, "of": 2}  # one listener, its two processes (the default)
    lives = {d["role"]: d["live"] for d in doc["deployments"].values()}
    assert lives == {"fraud": "v2", "churn": "v1", "ranker": "v2"}
    assert all(d["requests"] > 100 and d["failed"] == 0 for d in doc["deployments"].values())
    assert doc["alert_rollback_ms"] > 0 and "a real Alertmanager" in doc["alert_delivery"]
    assert not Path(doc["directory"]).exists()
    names = list(doc["deployments"])
    left = [c.name for n in names for c in docker_client.containers.list(all=True,
                                                                        filters={"label": f"bluegreen.project={n}"})]
    assert left == []
