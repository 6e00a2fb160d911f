"""Any model server: real MLflow and MLServer containers, the regressor, replay, drift, compare, Prometheus.

Every release here runs through the real CLI against real Docker and HAProxy; the third-party
servers are the example images (`bluegreen images build --examples`), and Prometheus is the
Debian package, started by the test on its own port.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Project, free_ports, wait_for

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_JSON = resources.files("bluegreen.orchestrator").joinpath("data/iris_holdout.json")
MLSERVER_LATENCY = 'rest_server_request_duration_seconds{path="/v2/models/{model_name}/infer"}'
MLFLOW_COMMAND = ["mlflow", "models", "serve", "-m", "/model", "--env-manager", "local", "-h", "{host}", "-p", "{port}"]


def iris_csv(path: Path) -> Path:
    """The bundled iris holdout as CSV with a 'species' label column (the CSV path of the holdout loader)."""
    doc = json.loads(resources.files("bluegreen.orchestrator").joinpath("data/iris_holdout.json").read_text())
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*doc["columns"], "species"])
        for row, label in zip(doc["x"], doc["y"], strict=True):
            w.writerow([*row, label])
    return path


def releases(project: Project) -> list[dict[str, Any]]:
    return json.loads(project.run("history", "--json").out)["releases"]  # type: ignore[no-any-return]


def live_version(project: Project) -> tuple[str, str]:
    s = json.loads(project.run("status", "--json").out)
    return s["live"], s["environments"][s["live"]]["version"]


class Traffic:
    """Steady requests through the proxy from a background thread (bounded), counting the answers."""

    def __init__(self, url: str, body: dict[str, Any], pause: float = 0.005, limit_s: float = 90) -> None:
        self.url, self.body, self.pause = url, body, pause
        self.codes: dict[int, int] = {}
        self.failures = 0
        self.stop_at = time.monotonic() + limit_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < self.stop_at:
                try:
                    code = client.post(self.url, json=self.body).status_code
                    self.codes[code] = self.codes.get(code, 0) + 1
                except httpx.HTTPError:
                    self.failures += 1
                self._stop.wait(self.pause)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()


def test_an_mlflow_model_is_released_rolled_back_and_a_wrong_contract_is_explained(
        project: Project, example_images: Any) -> None:
    iris_csv(project.root / "holdout.csv")
    project.env.update({
        "BLUEGREEN_ENVIRONMENTS__IMAGE": "bluegreen-mlflow", "BLUEGREEN_MODEL__PROFILE": "mlflow",
        "BLUEGREEN_ENVIRONMENTS__COMMAND": json.dumps(MLFLOW_COMMAND),
        "BLUEGREEN_ANALYSIS__HOLDOUT": "holdout.csv", "BLUEGREEN_ANALYSIS__LABEL_COLUMN": "species",
        "BLUEGREEN_DATABASE__URL": "",  # MLflow's server keeps no application database
        "BLUEGREEN_ENVIRONMENTS__HEALTH_TIMEOUT": "90", "BLUEGREEN_RELEASE__BAKE": "0.3s"})
    up = project.run("up", timeout=180)
    assert up.code == 0, up.err
    body = {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[6.3, 2.5, 5.0, 1.9]]}}
    assert httpx.post(f"{project.proxy_url}/invocations", json=body, timeout=10).json() == {"predictions": [2]}

    with Traffic(f"{project.proxy_url}/invocations", body) as traffic:
        released = project.run("release", "bluegreen-mlflow:v2", "--steps", "50,100", "--json", timeout=240)
    assert released.code == 0, released.err
    assert traffic.failures == 0 and set(traffic.codes) == {200}
    doc = json.loads(released.out)
    # MLflow's scoring server has no latency histogram: each step's p95 is the proxy's timing.
    shift = next(s for s in doc["steps"] if s["name"] == "shift-50")
    assert shift["analysis"]["p95_source"] == "proxy" and shift["analysis"]["p95_ms"] is not None
    gate = next(s for s in doc["steps"] if s["name"] == "gate")
    assert gate["version"] == "v2"  # read from the image label: MLflow's /version is MLflow's own
    assert gate["quality"]["candidate"]["accuracy"] >= 0.9 and gate["quality"]["source"].endswith("holdout.csv")
    assert "quality gate skipped" not in released.err
    assert live_version(project) == ("green", "v2")

    back = project.run("rollback", "--json")
    assert back.code == 0, back.err
    assert live_version(project) == ("blue", "v1")
    assert httpx.post(f"{project.proxy_url}/invocations", json=body, timeout=10).json() == {"predictions": [2]}

    # A contract that reads the answer in the wrong place: named at the gate with what was sent and
    # received, no traceback, traffic untouched; doctor names the failing part and its keys.
    wrong = {"BLUEGREEN_MODEL__PREDICTIONS": "/outputs/0/data"}
    failed = project.run("release", "bluegreen-mlflow:v2", env=wrong, timeout=240)
    assert failed.code == 11, failed.err
    assert "the answer has nothing at /outputs (it has predictions)" in failed.err
    assert "sent: {\"dataframe_split\"" in failed.err and "received: {\"predictions\"" in failed.err
    assert "Traceback" not in failed.err and "traffic is back on blue (v1)" in failed.err
    doctor = project.run("doctor", env=wrong)
    assert doctor.code == 14, doctor.err
    assert "FAIL predict" in doctor.out and "model.predictions" in doctor.out
    assert "ok   ready" in doctor.out and "ok   version       reports 'v1'" in doctor.out
    assert project.run("doctor").code == 0


def test_an_mlserver_model_is_released_and_rolled_back_over_the_open_inference_protocol(
        project: Project, example_images: Any) -> None:
    grpc_blue, metrics_blue, grpc_green, metrics_green = free_ports(4)
    project.env.update({
        "BLUEGREEN_ENVIRONMENTS__IMAGE": "bluegreen-mlserver", "BLUEGREEN_MODEL__PROFILE": "open-inference",
        "BLUEGREEN_MODEL__NAME": "iris", "BLUEGREEN_DATABASE__URL": "",
        "BLUEGREEN_ENVIRONMENTS__ENV": json.dumps({
            "MLSERVER_HTTP_PORT": "{port}", "MLSERVER_GRPC_PORT": "{port:grpc}",
            "MLSERVER_METRICS_PORT": "{port:metrics}", "MLSERVER_HOST": "{host}"}),
        "BLUEGREEN_ENVIRONMENTS__BLUE__PORTS": json.dumps({"grpc": grpc_blue, "metrics": metrics_blue}),
        "BLUEGREEN_ENVIRONMENTS__GREEN__PORTS": json.dumps({"grpc": grpc_green, "metrics": metrics_green}),
        "BLUEGREEN_MODEL__METRICS_PATH": "/metrics", "BLUEGREEN_MODEL__METRICS_PORT": "metrics",
        "BLUEGREEN_MODEL__LATENCY_HISTOGRAM": MLSERVER_LATENCY,
        "BLUEGREEN_ANALYSIS__HOLDOUT": str(IRIS_JSON),
        "BLUEGREEN_ENVIRONMENTS__HEALTH_TIMEOUT": "60", "BLUEGREEN_RELEASE__BAKE": "1s"})
    up = project.run("up", timeout=120)
    assert up.code == 0, up.err
    infer = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [[6.3, 2.5, 5.0, 1.9]]}]}
    with Traffic(f"{project.proxy_url}/v2/models/iris/infer", infer) as traffic:
        released = project.run("release", "bluegreen-mlserver:v2", "--steps", "50,100", "--json", timeout=180)
    assert released.code == 0, released.err
    assert traffic.failures == 0 and set(traffic.codes) == {200}
    doc = json.loads(released.out)
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["gate"]["version"] == "v2"  # from the model's metadata, GET /v2/models/iris
    assert steps["gate"]["quality"]["candidate"]["accuracy"] >= 0.9
    assert steps["shift-50"]["analysis"]["requests"] > 0
    shift = steps["shift-50"]["analysis"]
    assert shift["p95_ms"] is not None and shift["p95_source"] == "server histogram"  # on its metrics port
    assert set(shift["p95_by_source"]) == {"server histogram", "proxy"}  # the proxy's figure beside it
    answer = httpx.post(f"{project.proxy_url}/v2/models/iris/infer", json=infer, timeout=10).json()
    assert (answer["model_version"], answer["outputs"][0]["data"]) == ("v2", [2])
    assert project.run("rollback").code == 0
    answer = httpx.post(f"{project.proxy_url}/v2/models/iris/infer", json=infer, timeout=10).json()
    assert answer["model_version"] == "v1"


def test_a_better_regressor_is_promoted_and_a_degraded_one_rejected_by_r2_and_rmse(
        project: Project, docker_client: Any) -> None:
    project.env.update({"BLUEGREEN_ENVIRONMENTS__IMAGE": "bluegreen-regressor",
                        "BLUEGREEN_ANALYSIS__TASK": "regression", "BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    released = project.run("release", "bluegreen-regressor:v2", "--steps", "100", "--json")
    assert released.code == 0, released.err
    gate = next(s for s in json.loads(released.out)["steps"] if s["name"] == "gate")
    q = gate["quality"]
    assert q["task"] == "regression" and q["candidate"]["r2"] > q["live"]["r2"]
    assert q["candidate"]["rmse"] < q["live"]["rmse"]
    assert "r2" in released.err and "rmse" in released.err  # figures side by side on the console

    worse = project.run("release", "bluegreen-regressor:v1", "--env", "MODEL_QUALITY=degraded")
    assert worse.code == 11, worse.err
    table = [line.split() for line in worse.err.splitlines() if line.strip().startswith(("rmse", "r2", "mae"))]
    assert {row[0] for row in table if row[-1] == "FAIL"} == {"rmse", "mae", "r2"}
    assert "model quality: rmse" in worse.err and "r2 " in worse.err.split("model quality:")[1]
    assert live_version(project) == ("green", "v2")
    [rec] = [r for r in releases(project) if r["status"] == "rolled_back"]
    failed = next(s for s in rec["steps"] if s["outcome"] == "failed")
    assert failed["detail"]["quality"]["failures"]  # the figures are kept in the history


def diabetes_csv(path: Path) -> Path:
    """The bundled diabetes holdout as CSV, its amounts written as integers ('151'), as exports often are."""
    doc = json.loads(resources.files("bluegreen.orchestrator").joinpath("data/diabetes_holdout.json").read_text())
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*doc["columns"], "target"])
        for row, label in zip(doc["x"], doc["y"], strict=True):
            w.writerow([*row, int(label)])
    return path


def test_with_no_task_set_a_regressor_is_judged_as_one_and_a_constant_model_is_refused(
        project: Project, docker_client: Any) -> None:
    """A CSV of integer amounts and no analysis.task: the gate infers regression (RMSE, MAE, R²) and says why;
    the regressor's fallback, which answers the training mean for every row, is refused as inconclusive."""
    holdout = diabetes_csv(project.root / "holdout.csv")
    project.env.update({"BLUEGREEN_ENVIRONMENTS__IMAGE": "bluegreen-regressor", "BLUEGREEN_ANALYSIS__HOLDOUT":
                        str(holdout), "BLUEGREEN_ANALYSIS__LABEL_COLUMN": "target", "BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    released = project.run("release", "bluegreen-regressor:v2", "--steps", "100", "--json")
    assert released.code == 0, released.err
    q = next(s for s in json.loads(released.out)["steps"] if s["name"] == "gate")["quality"]
    assert (q["task"], set(q["candidate"])) == ("regression", {"rmse", "mae", "r2"})
    assert q["task_reason"].startswith("inferred: ") and "distinct integer labels" in q["task_reason"]
    assert "task: regression (inferred: " in released.err  # the console table says which task and why

    constant = project.run("release", "bluegreen-regressor:v2", "--env", "MODEL_VARIANT=baseline")
    assert constant.code == 11, constant.err
    assert "inconclusive: the candidate answered" in constant.err and "a constant answer" in constant.err
    assert live_version(project) == ("green", "v2")


@pytest.fixture
def with_recorded_traffic(project: Project, docker_client: Any) -> Project:
    """A reference deployment whose application database holds 150 recorded predictions."""
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    rows = json.loads(resources.files("bluegreen.orchestrator").joinpath("data/iris_holdout.json").read_text())["x"]
    with httpx.Client(timeout=10) as client:
        for i in range(150):
            answer = client.post(f"{project.proxy_url}/predict", json={"features": rows[i % len(rows)]})
            assert answer.status_code == 200
    return project


def test_a_candidate_that_disagrees_on_replayed_traffic_is_stopped_at_the_gate(with_recorded_traffic: Project) -> None:
    project = with_recorded_traffic
    # Accuracy on the holdout is allowed to halve: only the replay may stop this one.
    result = project.run("release", "bluegreen-model:v2", "--env", "FAULT_PREDICTION_SHIFT=0.5",
                         env={"BLUEGREEN_ANALYSIS__MAX_QUALITY_DROP": "1"})
    assert result.code == 11, result.err
    assert "failed at gate: replay:" in result.err
    assert "of the candidate's answers to 150 recorded requests disagree with the live model's (limit 5%" in result.err
    assert live_version(project) == ("blue", "v1")
    with sqlite3.connect(project.db_path, timeout=60) as conn:  # replayed probes are not recorded again
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 150


def test_drift_in_live_traffic_is_caught_during_the_bake(with_recorded_traffic: Project) -> None:
    project = with_recorded_traffic
    permissive = {"BLUEGREEN_ANALYSIS__MAX_QUALITY_DROP": "1", "BLUEGREEN_ANALYSIS__REPLAY__MAX_DIFFERENCE": "1"}
    with Traffic(f"{project.proxy_url}/predict", {"features": [6.0, 2.9, 4.5, 1.5]}):
        result = project.run("release", "bluegreen-model:v2", "--env", "FAULT_PREDICTION_SHIFT=0.6",
                             "--steps", "50,100", "--bake", "3s", env=permissive)
    assert result.code == 11, result.err
    assert "failed at shift-50: prediction drift: PSI" in result.err, result.err  # the whole reason, if not
    [rec] = releases(project)
    failed = next(s for s in rec["steps"] if s["outcome"] == "failed")
    assert failed["detail"]["drift"]["psi"] > 0.25
    assert live_version(project) == ("blue", "v1")


def test_compare_runs_two_versions_aside_and_cleans_up(with_recorded_traffic: Project) -> None:
    project = with_recorded_traffic
    result = project.run("compare", "bluegreen-model:v1", "bluegreen-model:v2", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["metrics"]["accuracy"]["a"] >= 0.9 and doc["metrics"]["accuracy"]["b"] >= 0.9
    assert doc["replay"]["requests"] == 150 and doc["replay"]["difference"] < 0.2
    leftovers = subprocess.run(["docker", "ps", "-a", "--filter", f"name={project.name}-compare", "--format",
                                "{{.Names}}"], capture_output=True, text=True, check=True).stdout.split()
    assert leftovers == []
    assert live_version(project) == ("blue", "v1")  # blue and green untouched
    text = project.run("compare", "bluegreen-model:v1", "bluegreen-model:v2")
    assert text.code == 0 and "accuracy" in text.out and "replay of 150 recorded requests" in text.out


@pytest.fixture
def prometheus(project: Project) -> Iterator[str]:
    """A real Prometheus scraping the project's file_sd target file every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is required (scripts/provision.sh installs it)")
    (port,) = free_ports(1)
    config = project.root / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "bluegreen", "file_sd_configs": [
            {"files": [str(project.root / "targets.json")], "refresh_interval": "1s"}]}]}))
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={project.root / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(ready, timeout=30), "prometheus did not become ready"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


ERROR_RATE = ('(sum(rate(http_requests_total{colour="{colour}",path="/predict",status=~"5.."}[{window}])) or vector(0))'
              ' / sum(rate(http_requests_total{colour="{colour}",path="/predict"}[{window}]))')


def test_prometheus_and_the_proxy_reach_the_same_verdict(project: Project, prometheus: str,
                                                         docker_client: Any) -> None:
    project.env.update({
        # Judged at the end of each bake, where both sources speak: no early failure from the proxy's counters.
        "BLUEGREEN_ANALYSIS__SAMPLE_INTERVAL": "60s",
        "BLUEGREEN_ANALYSIS__SOURCE": "both", "BLUEGREEN_ANALYSIS__MAX_ERROR_RATE": "0.05",
        "BLUEGREEN_ANALYSIS__PROMETHEUS__URL": prometheus,
        "BLUEGREEN_ANALYSIS__PROMETHEUS__TARGETS_FILE": "targets.json",
        "BLUEGREEN_ANALYSIS__PROMETHEUS__QUERIES": json.dumps({"error_rate": {"query": ERROR_RATE, "max": 0.05}})})
    assert project.run("up").code == 0
    targets = json.loads((project.root / "targets.json").read_text())
    assert {t["labels"]["colour"] for t in targets} == {"blue", "green"}

    def scraped() -> bool:
        doc = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()
        return any(t["health"] == "up" and t["labels"]["colour"] == "blue" for t in doc["data"]["activeTargets"])

    assert wait_for(scraped, timeout=30)
    body = {"features": [5.1, 3.5, 1.4, 0.2]}
    with Traffic(f"{project.proxy_url}/predict", body, pause=0.01):
        # Errors on user traffic only: the gate's probes pass, so the steps' two sources decide.
        faulty = project.run("release", "bluegreen-model:v2", "--env", "FAULT_ERROR_RATE=0.3", "--env",
                             "FAULT_SPARE_PROBES=1", "--steps", "50,100", "--bake", "5s")
        healthy = project.run("release", "bluegreen-model:v2", "--steps", "50,100", "--bake", "5s", "--json")
    assert faulty.code == 11, faulty.err
    rec = next(r for r in releases(project) if r["status"] == "rolled_back")
    judged = next(s for s in rec["steps"] if s["outcome"] == "failed")["detail"]
    assert "analysis" in judged and "prometheus" in judged, (faulty.err, judged)
    assert judged["analysis"]["ok"] is False and judged["prometheus"]["ok"] is False
    assert judged["prometheus"]["results"][0]["value"] > 0.05 and judged["analysis"]["error_rate"] > 0.05
    assert healthy.code == 0, healthy.err
    for step in json.loads(healthy.out)["steps"]:
        if step["name"].startswith("shift-"):
            assert step["analysis"]["ok"] is True and step["prometheus"]["ok"] is True, step
            assert step["prometheus"]["results"][0]["value"] <= 0.05


def test_no_series_in_prometheus_is_inconclusive_never_passed(project: Project, prometheus: str,
                                                              docker_client: Any) -> None:
    empty = 'sum(rate(http_requests_total{colour="{colour}",path="/nothing-here"}[{window}]))'
    project.env.update({
        "BLUEGREEN_ANALYSIS__SOURCE": "prometheus", "BLUEGREEN_ANALYSIS__PROMETHEUS__URL": prometheus,
        "BLUEGREEN_ANALYSIS__PROMETHEUS__QUERIES": json.dumps({"nothing": {"query": empty, "max": 1}}),
        "BLUEGREEN_RELEASE__BAKE": "0.5s"})
    assert project.run("up").code == 0
    result = project.run("release", "bluegreen-model:v2", "--steps", "100")
    assert result.code == 11, result.err
    assert "prometheus nothing: no data: the query returned no series (inconclusive, not passed)" in result.err
    assert live_version(project) == ("blue", "v1")


@pytest.mark.parametrize("profile", ["mlflow", "custom"])
def test_a_profile_without_a_holdout_or_a_body_is_refused_before_anything_starts(project: Project,
                                                                                 profile: str) -> None:
    env = {"BLUEGREEN_MODEL__PROFILE": profile}
    if profile == "custom":
        env.update({"BLUEGREEN_MODEL__READY_PATH": "/ready", "BLUEGREEN_MODEL__PREDICT_PATH": "/p",
                    "BLUEGREEN_MODEL__REQUEST": '{"rows": "$rows"}', "BLUEGREEN_MODEL__PREDICTIONS": "/out"})
    result = project.run("up", env=env)
    assert result.code == 4
    assert f"model.profile = '{profile}' has no bundled holdout" in result.err
    assert not os.path.exists(project.root / ".bluegreen")
