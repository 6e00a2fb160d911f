"""`bluegreen serve`: the API, the Alertmanager webhook (a real Alertmanager), drills, the monitor,
notifications and metrics (scraped by a real Prometheus), against real Docker and HAProxy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BLUEGREEN, REPO, Project, free_ports, wait_for
from tests.serving import TOKEN, Served, alertmanager_payload, start_serve, stop


def test_serve_refuses_to_start_without_a_token(project: Project) -> None:
    env = {k: v for k, v in {**os.environ, **project.env}.items() if k != "BLUEGREEN_SERVE__TOKEN"}
    proc = subprocess.run([*BLUEGREEN, "serve"], cwd=project.root, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 4
    assert proc.stderr.startswith("Error: bluegreen serve needs a token of at least 16 characters")
    config = project.root.joinpath("bluegreen.toml")
    config.write_text(config.read_text().replace('token_file = ""', 'token = "written-in-the-file-0123"'))
    written = subprocess.run([*BLUEGREEN, "serve"], cwd=project.root, env=env, capture_output=True, text=True)
    assert written.returncode == 4 and "serve.token must not be written in bluegreen.toml" in written.stderr


def test_every_endpoint_but_health_and_metrics_needs_the_token_and_a_refusal_changes_nothing(
        served: Served) -> None:
    for method, path in (("GET", "/api/status"), ("POST", "/api/rollback"), ("POST", "/api/alerts"),
                         ("GET", "/api/openapi.json"), ("POST", "/api/drills")):
        assert httpx.request(method, f"{served.url}{path}", timeout=10).status_code == 401, path
        wrong = httpx.request(method, f"{served.url}{path}", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401, path
    in_url = served.call("POST", f"/api/rollback?token={TOKEN}", json={})
    assert in_url.status_code == 401 and "in the URL is refused" in in_url.json()["detail"]
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{served.url}/metrics", timeout=10).status_code == 200
    assert served.live() == ("green", "v2")  # nothing moved
    assert "/api/rollback" in served.call("GET", "/api/openapi.json").json()["paths"]


def test_a_rollback_through_the_api_under_both_paths(served: Served) -> None:
    first = served.call("POST", "/api/rollback", json={"reason": "pager"})
    assert first.status_code == 200, first.text
    assert (first.json()["live"], first.json()["warm"]) == ("blue", True)
    assert served.live() == ("blue", "v1")
    again = served.call("POST", "/api/models/rollback", json={"reason": "back", "from": "v1"})
    assert again.status_code == 200 and served.live() == ("green", "v2")
    history = served.call("GET", "/api/history").json()
    assert [r["actor"] for r in history["releases"][:2]] == ["api@127.0.0.1", "api@127.0.0.1"]
    kinds = {e["kind"] for e in served.call("GET", "/api/events").json()}
    assert "progress" in kinds


def test_malformed_bodies_get_422_naming_the_field(served: Served) -> None:
    bad = served.call("POST", "/api/rollback", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 422
    typo = served.call("POST", "/api/rollback", json={"reasn": "x"})
    assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["body", "reasn"]
    alert = served.call("POST", "/api/alerts", json={"version": "4", "status": "firing", "groupKey": "g",
                                                     "alerts": [{"status": "firing", "labels": {}}]})
    assert alert.status_code == 422
    fields = {tuple(d["loc"]) for d in alert.json()["detail"]}
    assert ("body", "alerts", 0, "startsAt") in fields and ("body", "alerts", 0, "fingerprint") in fields
    assert served.live() == ("green", "v2")


def test_concurrent_rollbacks_act_once(served: Served) -> None:
    barrier = threading.Barrier(6)
    answers: list[httpx.Response] = []

    def ask() -> None:
        barrier.wait()
        answers.append(served.call("POST", "/api/rollback", json={"reason": "storm"}))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    acted = [a.json() for a in answers if a.status_code == 200 and a.json()["id"] is not None]
    assert len(acted) == 1 and set(codes) <= {200, 409}, [a.json() for a in answers]
    done = [a.json() for a in answers if a.status_code == 200 and a.json()["id"] is None]
    assert all(d["notes"][0].startswith("already done: a rollback") and "left blue serving v1" in d["notes"][0]
               for d in done)
    assert served.live() == ("blue", "v1")


@pytest.fixture
def served_with_rules(project: Project, docker_client: Any) -> Iterator[Served]:
    rules = '\nrules = [{ name = "page", match = { severity = "critical", alertname = "~Model.*" }, ' \
            'action = "rollback" }]\n'
    text = project.root.joinpath("bluegreen.toml").read_text().replace("\nrules = []\n", rules)
    assert rules in text
    project.root.joinpath("bluegreen.toml").write_text(text)
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    assert project.run("release", "bluegreen-model:v2", "--steps", "100").code == 0
    (port,) = free_ports(1)
    proc, log = start_serve(project, port)
    yield Served(project, f"http://127.0.0.1:{port}", proc, log)
    stop(proc)


def test_an_alert_storm_rolls_back_once(served_with_rules: Served) -> None:
    """100 firing alerts in one group, delivered 20 times in a second: one rollback."""
    served = served_with_rules
    payload = alertmanager_payload(100)
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(served.call("POST", "/api/alerts", json=payload)))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 20
    assert sum(a.json()["action"] == "rollback" for a in answers) == 1, [a.json() for a in answers][:3]
    assert served.live() == ("blue", "v1")
    rollbacks = [r for r in served.call("GET", "/api/history", params={"limit": 50}).json()["releases"]
                 if r["kind"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["reason"].startswith("alert ModelErrors")
    audit = [e for e in served.call("GET", "/api/history", params={"limit": 50}).json()["audit"]
             if e["action"] == "alert"]
    assert len(audit) == 20 and all("fp0000" in e["args"]["fingerprints"] for e in audit)


def test_unknown_and_resolved_alerts_are_recorded_and_change_nothing(served_with_rules: Served) -> None:
    served = served_with_rules
    other = served.call("POST", "/api/alerts", json=alertmanager_payload(1, {"severity": "info"}))
    assert other.json()["action"] is None and other.json()["result"] == "recorded; no rule asks for an action"
    resolved = served.call("POST", "/api/alerts", json=alertmanager_payload(1, status="resolved"))
    assert resolved.json()["action"] is None
    assert served.live() == ("green", "v2")


@pytest.fixture
def alertmanager(served_with_rules: Served) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager is required (scripts/provision.sh installs it)")
    (port,) = free_ports(1)
    root = served_with_rules.project.root
    config = root / "alertmanager.yml"
    config.write_text(json.dumps({
        "route": {"receiver": "bluegreen", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "bluegreen", "webhook_configs": [{
            "url": f"{served_with_rules.url}/api/alerts", "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}]}]}))
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={root / 'am-data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(ready, timeout=30), "alertmanager did not become ready"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_real_alertmanager_delivers_an_alert_and_traffic_goes_back(served_with_rules: Served,
                                                                     alertmanager: str) -> None:
    served = served_with_rules
    posted = time.monotonic()
    httpx.post(f"{alertmanager}/api/v2/alerts", timeout=10, json=[{
        "labels": {"alertname": "ModelErrorRate", "severity": "critical", "service": "models"},
        "annotations": {"summary": "5xx above 5%"}}]).raise_for_status()
    assert wait_for(lambda: served.live() == ("blue", "v1"), timeout=30, interval=0.1)
    print(f"alert to rollback: {time.monotonic() - posted:.2f}s")
    audit = served.call("GET", "/api/history").json()["audit"]
    assert any(e["action"] == "alert" and "ModelErrorRate" in e["args"]["alerts"] for e in audit)


def test_drills_warm_and_canary_and_never_during_a_release(served: Served) -> None:
    warm = served.call("POST", "/api/drills")
    assert warm.status_code == 200, warm.text
    report = warm.json()
    assert (report["kind"], report["ok"], report["failed_requests"]) == ("warm", True, 0), report
    assert report["rto_s"] < 5 and report["backup"]["ok"]
    assert served.live() == ("green", "v2")  # rolled forward again
    status = served.call("GET", "/api/status").json()
    assert status["standby"] == "blue"  # the rollback target is not spent
    assert served.call("GET", "/api/drills").json()[0]["status"] == "passed"
    project = served.project
    assert project.run("retire").code == 0
    canary = project.run("drill", "--json")
    assert canary.code == 0, canary.err
    doc = json.loads(canary.out)
    assert (doc["kind"], doc["ok"]) == ("canary", True)
    assert json.loads(project.run("status", "--json").out)["environments"]["blue"]["container"] == "absent"
    release = subprocess.Popen([*BLUEGREEN, "release", "bluegreen-model:v1", "--steps", "100", "--bake", "4s"],
                               cwd=project.root, env={**os.environ, **project.env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert release.stderr is not None
        for line in release.stderr:
            if "baking" in line:
                break
        skipped = served.call("POST", "/api/drills").json()
        assert skipped["kind"] == "skipped" and "locked by" in skipped["reasons"][0]
    finally:
        release.communicate(timeout=120)  # the rest of its output, and its pipe closed


def test_serve_killed_mid_rollback_is_finished_by_its_successor(served: Served) -> None:
    stop(served.proc)
    (port,) = free_ports(1)
    proc, _log = start_serve(served.project, port, {"BLUEGREEN_FAULT_CRASH_AT": "switch:before"})
    try:
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{port}/api/rollback", json={}, timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop(proc)
    status = json.loads(served.project.run("status", "--json").out)
    assert status["release"]["interrupted"] is True
    proc, _log = start_serve(served.project, port)  # its watch job settles the journal
    try:
        after = Served(served.project, f"http://127.0.0.1:{port}", proc, _log)
        assert wait_for(lambda: after.call("GET", "/api/status").json()["release"] is None, timeout=30)
        assert after.live() == ("blue", "v1")  # the journal finished the rollback it had started
        [rec] = [r for r in after.call("GET", "/api/history").json()["releases"] if r["kind"] == "rollback"]
        assert rec["status"] == "recovered" and "interrupted at step switch" in rec["reason"]
    finally:
        stop(proc)


class Receiver:
    """A webhook receiver that never answers (a hung Slack), counting the attempts it swallows."""

    def __init__(self) -> None:
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.hits += 1
                time.sleep(30)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_hanging_notification_receiver_never_delays_a_rollback(project: Project, docker_client: Any) -> None:
    receiver = Receiver()
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_NOTIFY__WEBHOOKS": json.dumps([receiver.url]),
                        "BLUEGREEN_NOTIFY__TIMEOUT": "1s", "BLUEGREEN_NOTIFY__RETRIES": "0"})
    assert project.run("up").code == 0
    assert project.run("release", "bluegreen-model:v2", "--steps", "100").code == 0
    (port,) = free_ports(1)
    proc, _log = start_serve(project, port)
    try:
        began = time.monotonic()
        answer = httpx.post(f"http://127.0.0.1:{port}/api/rollback", json={}, timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        took = time.monotonic() - began
        assert answer.status_code == 200 and answer.json()["warm"] is True
        assert took < 1.0, took  # the receiver hangs 30 s per attempt; the rollback does not wait for it
        assert wait_for(lambda: receiver.hits >= 1, timeout=10)
    finally:
        stop(proc)
        receiver.server.shutdown()
        receiver.server.server_close()


def test_metrics_are_scraped_by_a_real_prometheus_whose_shipped_rules_see_the_rollback(served: Served) -> None:
    binary = shutil.which("prometheus")
    assert binary is not None
    (port,) = free_ports(1)
    root = served.project.root
    name = served.project.name
    target = served.url.removeprefix("http://")
    (root / "prom.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(REPO / "runbooks" / "prometheus" / "rules.yml")],
        "scrape_configs": [{"job_name": "bluegreen", "static_configs": [{"targets": [target]}]}]}))
    proc = subprocess.Popen([binary, f"--config.file={root / 'prom.yml'}", f"--storage.tsdb.path={root / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def query(expr: str, strict: bool = False) -> list[dict[str, Any]]:
        """The answer to an instant query; empty while Prometheus does not answer (unless ``strict``)."""
        try:
            doc = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=2, params={"query": expr}).json()
        except (httpx.HTTPError, ValueError):
            if strict:
                raise
            return []
        assert doc["status"] == "success", (expr, doc)
        return list(doc["data"]["result"])

    def rollbacks_seen() -> str | None:
        found = query(f'bluegreen_operations_total{{deployment="{name}",kind="rollback",outcome="switched"}}')
        return str(found[0]["value"][1]) if found else None

    def firing(alert: str) -> bool:
        try:
            alerts = httpx.get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return any(a["labels"]["alertname"] == alert and a["labels"].get("deployment") == name
                   and a["state"] == "firing" for a in alerts)

    try:
        # The counter is scraped at 0 before the first rollback, so the rollback is an increase the rule sees.
        assert wait_for(lambda: rollbacks_seen() == "0", timeout=30, interval=0.5)
        assert not firing("BluegreenRollbackActivated")
        assert served.call("POST", "/api/rollback", json={}).status_code == 200

        def live_blue() -> bool:
            found = query(f'bluegreen_live{{deployment="{name}",colour="blue"}}')
            return bool(found) and found[0]["value"][1] == "1"

        assert wait_for(live_blue, timeout=30, interval=0.5)
        assert wait_for(lambda: firing("BluegreenRollbackActivated"), timeout=30, interval=0.5)
        text = httpx.get(f"{served.url}/metrics", timeout=10).text
        assert (f'bluegreen_operations_total{{deployment="{name}",kind="rollback",outcome="switched",'
                f'project="{name}"}} 1.0') in text
        assert f'bluegreen_rollback_duration_seconds_count{{deployment="{name}",project="{name}"}} 1.0' in text
        assert query(f'bluegreen_behind_newest_seconds{{deployment="{name}"}} > 0')
        assert not firing("BluegreenProxyDown") and not firing("BluegreenDeploymentUnreadable")
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert all(rule["health"] == "ok" for group in rules for rule in group["rules"]), rules
        # Every query of the shipped Grafana dashboard runs on these series.
        doc = json.loads((REPO / "runbooks" / "prometheus" / "grafana-dashboard.json").read_text())
        for panel in doc["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"].replace("$__rate_interval", "1m").replace("$__range", "1h")
                query(expr.replace("$deployment", name), strict=True)
        assert query(f'bluegreen_live{{deployment="{name}"}}') and query(
            f'sum by (deployment) (bluegreen_weight_percent{{deployment=~"{name}"}})')
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_monitor_rolls_back_a_version_whose_live_quality_dropped(project: Project, docker_client: Any) -> None:
    """v2 shifts the predictions of user traffic (its gate probes are spared): feedback shows it, the monitor acts."""
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_MONITOR__INTERVAL": "1s",
                        "BLUEGREEN_MONITOR__MIN_LABELLED": "40"})
    assert project.run("up").code == 0
    doc = json.loads(resources.files("bluegreen.orchestrator").joinpath("data/iris_holdout.json").read_text())
    rows = list(zip(doc["x"], doc["y"], strict=True))

    def traffic_with_feedback(n: int) -> None:
        """Predictions through the proxy, then their true labels (either colour records feedback: one database)."""
        with httpx.Client(base_url=project.proxy_url, timeout=10) as client:
            for i in range(n):
                x, y = rows[i % len(rows)]
                answer = client.post("/predict", json={"features": x}).json()
                assert "prediction_id" in answer, answer
                fed = client.post("/feedback", json={"prediction_id": answer["prediction_id"], "actual": y})
                assert fed.status_code == 200, fed.text

    traffic_with_feedback(60)
    lenient = {"BLUEGREEN_ANALYSIS__REPLAY__MAX_DIFFERENCE": "1", "BLUEGREEN_ANALYSIS__DRIFT__FAIL": "99"}
    released = project.run("release", "bluegreen-model:v2", "--env", "FAULT_PREDICTION_SHIFT=0.6", "--env",
                           "FAULT_SPARE_PROBES=1", "--steps", "100", env=lenient)
    assert released.code == 0, released.err
    traffic_with_feedback(60)
    shown = json.loads(project.run("monitor", "--json").out)
    assert shown["verdict"] == "degraded" and shown["live"]["version"] == "v2"
    assert shown["live"]["metrics"]["accuracy"] < shown["previous"]["metrics"]["accuracy"] * 0.95
    (port,) = free_ports(1)
    proc, _log = start_serve(project, port)
    try:
        assert wait_for(lambda: json.loads(project.run("status", "--json").out)["live"] == "blue", timeout=30)
    finally:
        stop(proc)
    [rec] = [r for r in json.loads(project.run("history", "--json").out)["releases"] if r["kind"] == "rollback"]
    assert rec["reason"].startswith("monitor: accuracy")


def test_scheduled_jobs_never_overlap_and_coalesce_missed_runs(tmp_path: Path) -> None:
    """After downtime a missed drill runs once, not once per miss; a job never runs twice at once."""
    from bluegreen.orchestrator.api.server import schedule
    from bluegreen.orchestrator.core.events import EventLog
    from bluegreen.orchestrator.settings.model import Settings

    settings = Settings(root=tmp_path, drills={"schedule": "0 3 * * *"}, monitor={"interval": "1m"},
                        serve={"watch_interval": "1h"}, backups={"schedule": "30 2 * * *"})
    scheduler = schedule(settings, EventLog())
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"backup", "drill", "monitor", "watch"}
        assert str(jobs["backup"].trigger) == "cron[month='*', day='*', day_of_week='*', hour='2', minute='30']"
        for job in jobs.values():
            assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 3600)
        assert str(jobs["drill"].trigger) == "cron[month='*', day='*', day_of_week='*', hour='3', minute='0']"
    finally:
        scheduler.shutdown(wait=False)


def test_an_approval_through_the_api_lets_the_release_go_on_and_a_late_one_is_refused(served: Served) -> None:
    project = served.project
    config = project.root / "bluegreen.toml"
    config.write_text(config.read_text() + '\n[[release.checks]]\nname = "sign-off"\nkind = "approval"\n'
                      'when = ["promote"]\ntimeout = "5m"\n')
    nothing = served.call("POST", "/api/approve")
    assert (nothing.status_code, nothing.json()["message"]) == (409, "no release is in progress")
    release = subprocess.Popen([*BLUEGREEN, "release", "bluegreen-model:v1", "--steps", "100"],
                               cwd=project.root, env={**os.environ, **project.env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def waiting() -> bool:
            current = served.call("GET", "/api/status").json()["release"]
            return bool(current and current["awaiting_approval"])

        assert wait_for(waiting, timeout=120, interval=0.2)
        approved = served.call("POST", "/api/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] in ("running", "promoted")  # taken; the release goes on
        _out, err = release.communicate(timeout=120)
        assert release.returncode == 0, err
    finally:
        if release.poll() is None:
            release.kill()
            release.communicate(timeout=60)
    assert served.live() == ("blue", "v1")
    promote = served.call("GET", "/api/history").json()["releases"][0]["steps"][-1]
    assert promote["name"] == "promote" and promote["detail"]["checks"][0]["by"] == "api@127.0.0.1"
