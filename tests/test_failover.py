"""Failing safe between releases: failover by the proxy, supervision, detection in about a second,
no step passed on no data, config releases and the shielded canary. Real Docker, HAProxy, nginx."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import Project, wait_for

V2 = "bluegreen-model:v2"


class Load:
    """Requests through the proxy from several threads (bounded in time), each failure counted."""

    def __init__(self, url: str, threads: int = 4, limit_s: float = 90) -> None:
        self.url = url
        self.codes: Counter[int] = Counter()
        self.versions: list[tuple[float, str]] = []
        self.failures = 0
        self.lock = threading.Lock()
        self.stop_at = time.monotonic() + limit_s
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < self.stop_at:
                try:
                    r = client.post(f"{self.url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
                    with self.lock:
                        self.codes[r.status_code] += 1
                        if r.status_code == 200:
                            self.versions.append((time.monotonic(), r.json()["model_version"]))
                except httpx.HTTPError:
                    with self.lock:
                        self.failures += 1

    @property
    def failed(self) -> int:
        return self.failures + sum(n for code, n in self.codes.items() if code != 200)

    def served_since(self, t0: float) -> set[str]:
        with self.lock:
            return {v for t, v in self.versions if t > t0}

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self.threads:
            t.join()


def status(project: Project) -> dict[str, Any]:
    result = project.run("status", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


@pytest.fixture(params=["haproxy", "nginx"])
def released(request: pytest.FixtureRequest, project: Project, docker_client: Any) -> Project:
    """v2 live on green after a release; v1 warm on blue, standing by."""
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_PROXY__DRIVER": request.param})
    assert project.run("up").code == 0
    result = project.run("release", V2, "--steps", "100")
    assert result.code == 0, result.err
    s = status(project)
    assert (s["live"], s["standby"], s["warm"]["color"]) == ("green", "blue", "blue")
    return project


def test_a_dead_live_colour_fails_over_to_the_warm_one_with_no_command(released: Project) -> None:
    project = released
    with Load(project.proxy_url) as load:
        assert wait_for(lambda: load.served_since(0) == {"v2"}, timeout=10)
        killed = time.monotonic()
        subprocess.run(["docker", "kill", f"{project.name}-green"], check=True, capture_output=True)
        assert wait_for(lambda: "v1" in load.served_since(killed), timeout=10)
        settled = time.monotonic()
        time.sleep(0.5)
        assert load.served_since(settled) == {"v1"}
    # At most the requests in flight when it died (4 threads) may fail; the rest go to the standby.
    assert load.failed <= 4, (load.codes, load.failures)
    s = status(project)
    assert any("the proxy sends its traffic to the standby blue" in note for note in s["notes"])
    # The next command makes it official and keeps the dead colour's logs.
    recovered = project.run("recover")
    assert recovered.code == 0, recovered.err
    assert "automatic failover: green (v2) died (its container exited with code 137)" in recovered.out
    s = status(project)
    assert (s["live"], s["weights"]) == ("blue", {"blue": 100, "green": 0})
    [record] = [r for r in json.loads(project.run("history", "--json").out)["releases"] if r["kind"] == "failover"]
    assert record["status"] == "failed_over"
    logs = list((project.root / ".bluegreen" / "logs").glob(f"{project.name}-green-*.log"))
    assert len(logs) == 1 and "listening on" in logs[0].read_text()


@pytest.mark.parametrize("driver", ["haproxy", "nginx"])
def test_the_proxy_comes_back_by_itself_with_the_weights_in_force(project: Project, docker_client: Any,
                                                                   driver: str) -> None:
    """kill -9 of the proxy process (after reloads): its container restarts it, with the config it last wrote."""
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_PROXY__DRIVER": driver})
    assert project.run("up").code == 0
    assert project.run("release", V2, "--steps", "100").code == 0
    pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", f"{project.name}-proxy"],
                             capture_output=True, text=True, check=True).stdout)
    os.kill(pid, signal.SIGKILL)

    def answers_v2() -> bool:
        try:
            return httpx.get(f"{project.proxy_url}/version", timeout=1).json()["version"] == "v2"
        except (httpx.HTTPError, ValueError):
            return False

    assert wait_for(answers_v2, timeout=20)
    s = status(project)
    assert (s["weights"], s["standby"]) == ({"blue": 0, "green": 100}, "blue")
    restarts = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", f"{project.name}-proxy"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert restarts == "1"


def test_model_containers_and_the_proxy_carry_a_restart_policy(project: Project, docker_client: Any) -> None:
    assert project.run("up").code == 0
    for name in (f"{project.name}-blue", f"{project.name}-proxy"):
        policy = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", name],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert policy == "unless-stopped", name


def test_a_bad_candidate_is_caught_in_about_a_second_not_at_the_end_of_its_bake(
        project: Project, docker_client: Any) -> None:
    """50 % errors on user traffic (probes spared, so it passes its gate), 30 s bakes: caught early."""
    assert project.run("up").code == 0
    began = time.monotonic()
    with Load(project.proxy_url, threads=4) as load:
        result = project.run("release", V2, "--env", "FAULT_ERROR_RATE=0.5", "--env", "FAULT_SPARE_PROBES=1",
                             "--bake", "30s")
    took = time.monotonic() - began
    assert result.code == 11, result.err
    assert "failed at shift-10: error rate" in result.err and "at 99% confidence" in result.err
    assert took < 20  # a 30 s bake was not waited out
    [rec] = json.loads(project.run("history", "--json").out)["releases"]
    failed = next(s for s in rec["steps"] if s["outcome"] == "failed")
    assert failed["detail"]["detected_after_s"] < 5
    assert load.failed < load.codes[200]  # a tenth of traffic for a few seconds


def test_a_healthy_candidate_under_steady_traffic_is_not_failed_by_the_early_checks(
        project: Project, docker_client: Any) -> None:
    assert project.run("up").code == 0
    with Load(project.proxy_url, threads=2) as load:
        result = project.run("release", V2, "--steps", "10,50,100", "--bake", "3s")
    assert result.code == 0, result.err
    assert load.failed == 0


@pytest.mark.parametrize(("policy", "code", "message"), [
    ("probe", 0, "0 user requests, so 20 probes (0 failed)"),
    ("fail", 11, "only 0 requests reached it during the bake (analysis.min_requests = 20)"),
    ("pause", 11, "shift-100 paused 1s without 20 requests"),
])
def test_no_step_passes_on_no_data(project: Project, docker_client: Any, policy: str, code: int,
                                   message: str) -> None:
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_ANALYSIS__NO_TRAFFIC": policy,
                        "BLUEGREEN_ANALYSIS__PAUSE_TIMEOUT": "1s"})
    assert project.run("up").code == 0
    result = project.run("release", V2, "--steps", "100")
    assert result.code == code, result.err
    assert message in result.err
    if policy == "pause":
        assert "shift-100: paused, inconclusive: 0 of 20 requests; waiting for traffic" in result.err


def test_a_settings_change_is_a_release_gated_and_rolled_back_like_any_other(project: Project,
                                                                             docker_client: Any) -> None:
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    result = project.run("release", "bluegreen-model:v1", "--env", "FAULT_LATENCY_MS=1", "--env", "SECRET=hunter2",
                         "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["version"].startswith("v1+cfg.")
    [rec] = json.loads(project.run("history", "--json").out)["releases"]
    assert rec["plan"]["config_changes"] == {"added": ["FAULT_LATENCY_MS", "SECRET"]}
    history = project.run("history")
    assert "config release: added FAULT_LATENCY_MS, SECRET" in history.out and "hunter2" not in history.out
    again = project.run("release", "bluegreen-model:v1", "--env", "FAULT_LATENCY_MS=1", "--env", "SECRET=hunter2")
    assert again.code == 2 and "is already live in green with these settings" in again.err
    back = project.run("rollback", "--json")
    assert back.code == 0 and json.loads(back.out)["warm"] is True
    assert status(project)["environments"]["blue"]["version"] == "v1"


def test_the_shielded_canary_hides_the_candidates_errors_from_users_but_not_from_the_analysis(
        project: Project, docker_client: Any) -> None:
    project.env.update({"BLUEGREEN_PROXY__RETRY_CANDIDATE_FAILURES": "true"})
    assert project.run("up").code == 0
    with Load(project.proxy_url, threads=4) as load:
        result = project.run("release", V2, "--env", "FAULT_ERROR_RATE=0.3", "--env", "FAULT_SPARE_PROBES=1",
                             "--steps", "50,100", "--bake", "5s")
    assert result.code == 11, result.err
    assert "failed at shift-50: error rate" in result.err
    assert load.failed == 0 and load.codes[200] > 0, (load.codes, load.failures)


def _dockerd() -> tuple[int, list[str]]:
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    if len(out) != 1:
        pytest.fail(f"one dockerd process is expected (scripts/provision.sh starts it), found {out}")
    pid = int(out[0])
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return pid, [part.decode() for part in fh.read().split(b"\0") if part]


def test_a_restarted_docker_engine_brings_everything_back_with_no_command(project: Project,
                                                                         docker_client: Any) -> None:
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    assert project.run("release", V2, "--steps", "100").code == 0
    pid, argv = _dockerd()
    log = open(project.root / "dockerd.log", "ab")  # noqa: SIM115 - handed to the restarted engine
    restarted = False
    try:
        os.kill(pid, signal.SIGTERM)
        assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=60, interval=0.2), "dockerd did not stop"
        subprocess.run(["setsid", "-f", *argv], stdout=log, stderr=log, check=True)  # outlives this test
        restarted = True
        began = time.monotonic()

        def engine() -> bool:
            return subprocess.run(["docker", "info"], capture_output=True).returncode == 0

        assert wait_for(engine, timeout=60, interval=0.2), "dockerd did not come back"

        def serves_v2() -> bool:
            try:
                return httpx.get(f"{project.proxy_url}/version", timeout=1).json()["version"] == "v2"
            except (httpx.HTTPError, ValueError):  # not yet listening, or a 503 page while colours come back
                return False

        assert wait_for(serves_v2, timeout=60, interval=0.2)
        print(f"traffic back {time.monotonic() - began:.1f}s after the engine was started again")
    finally:
        if not restarted:
            subprocess.run(["setsid", "-f", *argv], stdout=log, stderr=log, check=False)
            wait_for(lambda: subprocess.run(["docker", "info"], capture_output=True).returncode == 0, timeout=60)
        log.close()
    s = status(project)
    assert (s["live"], s["weights"], s["standby"]) == ("green", {"blue": 0, "green": 100}, "blue")
    assert s["environments"]["blue"]["healthy"] and s["environments"]["green"]["healthy"]
