"""The reference model server, run as the real image on the real engine, and its fault knobs."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_ports, wait_for

IMAGE = "bluegreen-model:v1"

HOLDOUT_SCRIPT = """
import json
from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split
x, y = load_iris(return_X_y=True)
_, xt, _, yt = train_test_split(x, y, test_size=0.3, random_state=7, stratify=y)
print(json.dumps({"x": xt.tolist(), "y": yt.tolist()}))
"""


class Model:
    def __init__(self, container: Any, port: int, data: Path) -> None:
        self.container = container
        self.url = f"http://127.0.0.1:{port}"
        self.data = data

    def predict(self, body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json=body, timeout=10)

    def rows(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.data / "app.db", timeout=60) as conn:
            return conn.execute("SELECT id, model_version, prediction FROM predictions ORDER BY id").fetchall()


@pytest.fixture
def start_model(docker_client: Any, tmp_path: Path) -> Iterator[Callable[..., Model]]:
    containers: list[Any] = []

    def start(wait: bool = True, image: str = IMAGE, **env: str) -> Model:
        (port,) = free_ports(1)
        data = tmp_path / f"data{len(containers)}"
        data.mkdir()
        container = docker_client.containers.run(
            image, name=f"test-model-{uuid.uuid4().hex[:8]}", detach=True, network_mode="host",
            environment={"PORT": str(port), "HOST": "127.0.0.1", "MODEL_IMAGE": image,
                         "DATABASE_URL": "sqlite:////data/app.db", **env},
            volumes={str(data): {"bind": "/data", "mode": "rw"}},
        )
        containers.append(container)
        model = Model(container, port, data)
        if wait:
            assert wait_for(lambda: _answers(model.url), timeout=30), container.logs().decode()
        return model

    yield start
    for c in containers:
        c.remove(force=True)


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/version", timeout=1)
        return True
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def holdout(docker_client: Any) -> dict[str, list[Any]]:
    out = docker_client.containers.run(IMAGE, ["/opt/model/bin/python", "-c", HOLDOUT_SCRIPT], remove=True)
    return json.loads(out)  # type: ignore[no-any-return]


def accuracy(model: Model, holdout: dict[str, list[Any]]) -> float:
    response = model.predict({"instances": holdout["x"]})
    assert response.status_code == 200
    predicted = [p["class_id"] for p in response.json()["predictions"]]
    return sum(p == y for p, y in zip(predicted, holdout["y"], strict=True)) / len(holdout["y"])


def test_endpoints_answer_and_every_prediction_is_recorded(start_model: Callable[..., Model]) -> None:
    model = start_model()
    assert httpx.get(f"{model.url}/health").json() == {"status": "ok", "version": "v1"}
    assert httpx.get(f"{model.url}/version").json() == {
        "version": "v1", "image": IMAGE, "variant": "model", "quality": "good", "algorithm": "LogisticRegression",
        "task": "classification"}
    one = model.predict({"features": [5.1, 3.5, 1.4, 0.2]}).json()
    assert (one["prediction"], one["model_version"]) == ("setosa", "v1") and 0.5 < one["score"] <= 1
    named = model.predict({"features": {"sepal_length": 6.3, "sepal_width": 2.5, "petal_length": 5.0,
                                        "petal_width": 1.9}}).json()
    batch = model.predict({"instances": [[5.0, 3.4, 1.5, 0.2], [6.7, 3.0, 5.2, 2.3]]}).json()
    assert [p["prediction"] for p in batch["predictions"]] == ["setosa", "virginica"]
    ids = [one["prediction_id"], named["prediction_id"], *(p["prediction_id"] for p in batch["predictions"])]
    assert [row[0] for row in model.rows()] == ids
    assert {row[1] for row in model.rows()} == {"v1"}
    metrics = httpx.get(f"{model.url}/metrics").text
    assert {'http_requests_total{method="POST",path="/predict",status="200"} 3',
            "predict_latency_seconds_count 3"} <= set(metrics.splitlines())
    assert 'model_info{algorithm="LogisticRegression"' in metrics


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("not json", "body must be JSON"),
        ({"x": 1}, 'body must be {"features": [...]} or {"instances": [[...], ...]}'),
        ({"features": [1, 2]}, "features must be 4 numbers: sepal_length, sepal_width, petal_length, petal_width"),
        ({"features": [1, 2, "3", 4]}, "features must be numbers"),
        ({"features": {"sepal_length": 1}}, "missing features: sepal_width, petal_length, petal_width"),
        ({"instances": []}, "instances must be a list of 1 to 1000 feature rows"),
    ],
)
def test_bad_input_gets_400_with_the_reason_and_records_nothing(
    start_model: Callable[..., Model], body: Any, error: str
) -> None:
    model = start_model()
    raw = isinstance(body, str)
    response = httpx.post(f"{model.url}/predict", content=body) if raw else model.predict(body)
    assert (response.status_code, response.json()) == (400, {"error": error})
    assert model.rows() == []


def test_fault_error_rate_one_fails_every_prediction(start_model: Callable[..., Model]) -> None:
    model = start_model(FAULT_ERROR_RATE="1")
    codes = [model.predict({"features": [5.1, 3.5, 1.4, 0.2]}).status_code for _ in range(20)]
    assert codes == [500] * 20
    assert httpx.get(f"{model.url}/health").status_code == 200  # the fault hits predictions, not health


def test_fault_error_rate_is_a_share_of_calls(start_model: Callable[..., Model]) -> None:
    model = start_model(FAULT_ERROR_RATE="0.5")
    codes = [model.predict({"features": [5.1, 3.5, 1.4, 0.2]}).status_code for _ in range(200)]
    assert set(codes) == {200, 500}
    assert 60 <= codes.count(500) <= 140  # binomial(200, 0.5): outside this is ~1e-8


def test_fault_latency_delays_each_prediction(start_model: Callable[..., Model]) -> None:
    model = start_model(FAULT_LATENCY_MS="300")
    for _ in range(3):
        start = time.monotonic()
        assert model.predict({"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 200
        assert time.monotonic() - start >= 0.3


def test_fault_crash_on_start_exits_with_status_3(start_model: Callable[..., Model]) -> None:
    model = start_model(wait=False, FAULT_CRASH_ON_START="1")
    result = model.container.wait(timeout=30)
    assert result["StatusCode"] == 3
    assert "FAULT_CRASH_ON_START is set" in model.container.logs().decode()


def test_fault_unhealthy_fails_health_but_still_predicts(start_model: Callable[..., Model]) -> None:
    model = start_model(FAULT_UNHEALTHY="1")
    health = httpx.get(f"{model.url}/health")
    assert (health.status_code, health.json()["status"]) == (503, "unhealthy")
    assert model.predict({"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 200


def test_a_bad_fault_value_stops_the_server_with_its_name(start_model: Callable[..., Model]) -> None:
    model = start_model(wait=False, FAULT_ERROR_RATE="2")
    assert model.container.wait(timeout=30)["StatusCode"] == 2
    assert "FAULT_ERROR_RATE=2.0 must be in 0..1" in model.container.logs().decode()


def test_v1_and_v2_are_good_models_and_degraded_is_clearly_worse(
    start_model: Callable[..., Model], holdout: dict[str, list[Any]]
) -> None:
    v1 = accuracy(start_model(), holdout)
    v2_model = start_model(image="bluegreen-model:v2")
    assert httpx.get(f"{v2_model.url}/version").json()["algorithm"] == "RandomForestClassifier"
    v2 = accuracy(v2_model, holdout)
    degraded = accuracy(start_model(MODEL_QUALITY="degraded"), holdout)
    assert v1 >= 0.9 and v2 >= 0.9
    assert degraded < v1 * 0.95  # the quality gate's rule: more than 5 % worse


def test_baseline_variant_serves_rules_without_the_learned_model(
    start_model: Callable[..., Model], holdout: dict[str, list[Any]]
) -> None:
    model = start_model(MODEL_VARIANT="baseline")
    info = httpx.get(f"{model.url}/version").json()
    assert (info["variant"], info["algorithm"]) == ("baseline", "rules")
    assert accuracy(model, holdout) >= 0.9
    assert {row[1] for row in model.rows()} == {"v1"}


def _listen_backlog(port: int) -> int:
    """The accept queue of the socket listening on ``port`` (ss shows it as Send-Q), read on the host."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[2])


def test_the_listen_backlog_takes_bursts_of_new_connections(start_model: Callable[..., Model]) -> None:
    """A proxy opening its pool under load must never wait for a SYN retransmit (1 s)."""
    model = start_model()
    port = int(model.url.rsplit(":", 1)[1])
    assert _listen_backlog(port) >= 1024
    answered: list[int] = []
    barrier = threading.Barrier(64)

    def connect() -> None:
        barrier.wait()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: model\r\nConnection: close\r\n\r\n")
            if sock.makefile("rb").readline().startswith(b"HTTP/1.1 200"):
                answered.append(1)

    threads = [threading.Thread(target=connect) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answered) == 64


def test_concurrent_predictions_are_each_recorded_once_with_their_own_id(start_model: Callable[..., Model]) -> None:
    """Writes are group-committed: many requests share a transaction, none is lost or mixed up."""
    model = start_model()
    features = [[5.1, 3.5, 1.4, 0.2], [6.3, 2.5, 5.0, 1.9], [5.9, 3.0, 4.2, 1.5], [7.7, 3.8, 6.7, 2.2]]
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=model.url, timeout=10) as c:  # one kept-alive connection per client
            for i in range(25):
                row = features[(n + i) % len(features)]
                doc = c.post("/predict", json={"features": row}).raise_for_status().json()
                with lock:
                    answers.append({"features": row, **doc})

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 400
    by_id = {a["prediction_id"]: a for a in answers}
    assert len(by_id) == 400  # every answer has its own row
    with sqlite3.connect(model.data / "app.db", timeout=60) as conn:
        stored = conn.execute("SELECT id, features, prediction FROM predictions").fetchall()
    assert len(stored) == 400
    for row_id, features_json, prediction in stored:
        assert json.loads(features_json) == by_id[row_id]["features"]
        assert prediction == by_id[row_id]["prediction"]
    assert "prediction_rows_written_total 400" in httpx.get(f"{model.url}/metrics").text.splitlines()


def _in_flight(model: Model) -> int:
    text = httpx.get(f"{model.url}/metrics", timeout=5).text
    return int(re.search(r"^predict_requests_in_flight (\d+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]


def test_a_stop_lets_requests_in_flight_finish_and_records_them(start_model: Callable[..., Model]) -> None:
    """docker stop (SIGTERM): no new connections, but every request already taken is answered."""
    model = start_model(FAULT_LATENCY_MS="1500")
    codes: list[int] = []
    started = threading.Barrier(6)

    def slow_request() -> None:
        with httpx.Client(timeout=20) as c:
            started.wait()
            codes.append(c.post(f"{model.url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}).status_code)

    threads = [threading.Thread(target=slow_request) for _ in range(5)]
    for t in threads:
        t.start()
    started.wait()
    # The requests are in flight once the server counts them; only then stop it.
    assert wait_for(lambda: _in_flight(model) == 5, timeout=10)
    model.container.stop(timeout=10)
    for t in threads:
        t.join()
    assert codes == [200] * 5
    assert model.container.wait(timeout=10)["StatusCode"] == 0
    assert len(model.rows()) == 5
    assert "stopped" in model.container.logs().decode()


REGRESSOR = "bluegreen-regressor"
DIABETES_SCRIPT = """
import json
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
x, y = load_diabetes(return_X_y=True)
_, xt, _, yt = train_test_split(x, y, test_size=0.3, random_state=7)
print(json.dumps({"x": xt.tolist(), "y": yt.tolist()}))
"""


def r2_and_rmse(model: Model, holdout: dict[str, list[Any]]) -> tuple[float, float]:
    response = model.predict({"instances": holdout["x"]})
    assert response.status_code == 200, response.text
    predicted = [p["value"] for p in response.json()["predictions"]]
    y = holdout["y"]
    mean = sum(y) / len(y)
    sse = sum((p - t) ** 2 for p, t in zip(predicted, y, strict=True))
    return 1 - sse / sum((t - mean) ** 2 for t in y), (sse / len(y)) ** 0.5


def test_the_regressor_family_v2_beats_v1_and_degraded_is_clearly_worse(
    start_model: Callable[..., Model], docker_client: Any
) -> None:
    """bluegreen-regressor: diabetes, v1 a shallow tree, v2 ridge; answers values, recorded like classes."""
    holdout = json.loads(docker_client.containers.run(f"{REGRESSOR}:v1", ["/opt/model/bin/python", "-c",
                                                                        DIABETES_SCRIPT], remove=True))
    v1 = start_model(image=f"{REGRESSOR}:v1")
    assert httpx.get(f"{v1.url}/version").json()["task"] == "regression"
    one = v1.predict({"features": holdout["x"][0]}).json()
    assert isinstance(one["prediction"], float) and one["value"] == one["prediction"]
    r2_v1, rmse_v1 = r2_and_rmse(v1, holdout)
    r2_v2, rmse_v2 = r2_and_rmse(start_model(image=f"{REGRESSOR}:v2"), holdout)
    r2_bad, rmse_bad = r2_and_rmse(start_model(image=f"{REGRESSOR}:v1", MODEL_QUALITY="degraded"), holdout)
    assert r2_v2 > r2_v1 > 0.3 and rmse_v2 < rmse_v1
    assert r2_bad < r2_v1 * 0.95 and rmse_bad > rmse_v1 * 1.05  # worse by both of the gate's measures
    metrics = httpx.get(f"{v1.url}/metrics").text
    count = re.search(r"^prediction_value_count (\d+)$", metrics, re.MULTILINE)
    assert count is not None and int(count.group(1)) == 1 + len(holdout["x"])  # every row sent is user traffic here


def test_probe_requests_are_answered_but_neither_recorded_nor_counted(start_model: Callable[..., Model]) -> None:
    """bluegreen's own quality checks must not pollute the application's data or the step's analysis."""
    model = start_model()
    probe = httpx.post(f"{model.url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                       headers={"X-Bluegreen-Probe": "quality"}, timeout=10).json()
    assert probe["prediction"] == "setosa" and probe["prediction_id"] is None
    assert model.rows() == []
    metrics = httpx.get(f"{model.url}/metrics").text
    lines = set(metrics.splitlines())
    assert {"probe_requests_total 1", "predict_latency_seconds_count 0", 'predictions_total{class="setosa"} 0'} <= lines


def test_prediction_shift_moves_the_answers(start_model: Callable[..., Model]) -> None:
    """FAULT_PREDICTION_SHIFT=1: a classifier answers the next class for every row (a drifting model)."""
    normal, drifting = start_model(), start_model(FAULT_PREDICTION_SHIFT="1")
    rows = [[5.1, 3.5, 1.4, 0.2], [6.3, 2.5, 5.0, 1.9], [5.9, 3.0, 4.2, 1.5]]
    ids = [p["class_id"] for p in normal.predict({"instances": rows}).json()["predictions"]]
    shifted = [p["class_id"] for p in drifting.predict({"instances": rows}).json()["predictions"]]
    assert shifted == [(i + 1) % 3 for i in ids]


def test_faults_can_spare_probes_so_only_user_traffic_sees_them(start_model: Callable[..., Model]) -> None:
    model = start_model(FAULT_ERROR_RATE="1", FAULT_SPARE_PROBES="1")
    assert model.predict({"features": [5.1, 3.5, 1.4, 0.2]}).status_code == 500
    probe = httpx.post(f"{model.url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                       headers={"X-Bluegreen-Probe": "gate"}, timeout=10)
    assert probe.status_code == 200


def test_feedback_is_stored_beside_its_prediction(start_model: Callable[..., Model]) -> None:
    model = start_model()
    one = model.predict({"features": [6.3, 2.5, 5.0, 1.9]}).json()
    by_id = httpx.post(f"{model.url}/feedback", json={"prediction_id": one["prediction_id"], "actual": 2}, timeout=10)
    assert by_id.json() == {"prediction_id": one["prediction_id"], "recorded": True}
    assert httpx.post(f"{model.url}/feedback", json={"prediction_id": 999, "actual": "setosa"},
                      timeout=10).status_code == 404
    bad = httpx.post(f"{model.url}/feedback", json={"prediction_id": one["prediction_id"], "actual": "rose"},
                     timeout=10)
    assert bad.status_code == 400 and "setosa, versicolor, virginica" in bad.json()["error"]
    with sqlite3.connect(model.data / "app.db", timeout=60) as conn:
        assert conn.execute("SELECT prediction_id, actual FROM feedback").fetchall() == [
            (one["prediction_id"], "virginica")]  # a class id is stored by name, like the prediction
