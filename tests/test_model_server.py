"""The reference model server, run as the real image on the real engine, and its fault knobs."""

from __future__ import annotations

import json
import sqlite3
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
        "version": "v1", "image": IMAGE, "variant": "model", "quality": "good", "algorithm": "LogisticRegression"}
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
    assert 'http_requests_total{method="POST",path="/predict",status="200"} 3' in metrics
    assert "predict_latency_seconds_count 3" in metrics
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
