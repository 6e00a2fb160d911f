"""The model contract, quality metrics, drift and replay arithmetic: pure functions, table-driven."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bluegreen.orchestrator.analysis import drift
from bluegreen.orchestrator.model import contract, quality
from bluegreen.orchestrator.model.contract import ContractMismatch, resolve


def model(**overrides: Any) -> SimpleNamespace:
    fields = dict.fromkeys(contract.Contract.__dataclass_fields__)
    fields.update(profile="reference", name="model")
    fields.update(overrides)
    return SimpleNamespace(**fields)


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.3, 2.5, 5.0, 1.9]]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.mark.parametrize(("profile", "body"), [
    ("reference", {"instances": ROWS}),
    ("mlflow", {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}),
    ("open-inference", {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS}]}),
])
def test_each_profile_builds_its_protocols_request(profile: str, body: Any) -> None:
    c = resolve(model(profile=profile))
    assert json.loads(c.body(ROWS, COLUMNS)) == body


def test_open_inference_paths_name_the_model() -> None:
    c = resolve(model(profile="open-inference", name="iris"))
    assert (c.path(c.predict_path), c.path(c.ready_path), c.path(c.version_path)) == (
        "/v2/models/iris/infer", "/v2/health/ready", "/v2/models/iris")


def test_every_part_can_be_overridden_and_templates_fill_all_placeholders() -> None:
    c = resolve(model(profile="custom", ready_path="/ready", predict_path="/score", predictions="/out",
                      request='{"rows": "$records", "n": "$n", "w": "$width", "flat": "$flat"}'))
    assert c.ready_path == "/ready" and c.version_from == "none"
    assert json.loads(c.body(ROWS, COLUMNS)) == {
        "rows": [dict(zip(COLUMNS, r, strict=True)) for r in ROWS], "n": 2, "w": 4,
        "flat": [5.1, 3.5, 1.4, 0.2, 6.3, 2.5, 5.0, 1.9]}


def test_answers_are_read_with_pointers_and_a_wrong_pointer_is_named() -> None:
    c = resolve(model(profile="open-inference"))
    assert c.read({"outputs": [{"data": [0, 2]}]}, 2) == ([0, 2], None)
    with pytest.raises(ContractMismatch) as info:
        c.read({"predictions": [0, 2]}, 2)
    assert str(info.value) == "the answer has nothing at /outputs (it has predictions)"
    with pytest.raises(ContractMismatch, match="has 1 predictions for 2 rows"):
        c.read({"outputs": [{"data": [0]}]}, 2)
    reference = resolve(model())
    values, probabilities = reference.read({"predictions": [{"value": 1, "probabilities": [0.1, 0.8, 0.1]}]}, 1)
    assert values == [1] and probabilities == [[0.1, 0.8, 0.1]]


def test_classification_metrics() -> None:
    m = quality.metrics("classification", [0, 1, 1, 2], [0, 1, 2, 2],
                        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    assert m["accuracy"] == 0.75
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.3) + math.log(0.8)) / 4)
    assert quality.metrics("classification", ["1", 2.0], [1, 2])["accuracy"] == 1.0  # labels across JSON types


def test_regression_metrics() -> None:
    m = quality.metrics("regression", [2.0, 4.0, 6.0], [1.0, 5.0, 6.0])
    assert m["rmse"] == pytest.approx(math.sqrt(2 / 3)) and m["mae"] == pytest.approx(2 / 3)
    assert m["r2"] == pytest.approx(1 - 2 / (((1 - 4) ** 2) + 1 + 4))


@pytest.mark.parametrize(("task", "candidate", "live", "failing"), [
    ("classification", {"accuracy": 0.95, "f1_macro": 0.95}, {"accuracy": 0.96, "f1_macro": 0.96}, []),
    ("classification", {"accuracy": 0.62, "f1_macro": 0.60}, {"accuracy": 0.96, "f1_macro": 0.96},
     ["accuracy", "f1_macro"]),
    ("regression", {"rmse": 74.5, "mae": 60.0, "r2": 0.03}, {"rmse": 58.4, "mae": 47.0, "r2": 0.40},
     ["rmse", "mae", "r2"]),
    ("regression", {"rmse": 52.2, "mae": 42.0, "r2": 0.52}, {"rmse": 58.4, "mae": 47.0, "r2": 0.40}, []),
    ("regression", {"rmse": 60.0, "mae": 47.0, "r2": 0.39}, {"rmse": 58.4, "mae": 47.0, "r2": 0.40}, []),
])
def test_each_metric_is_judged_in_its_own_direction(task: str, candidate: dict[str, float], live: dict[str, float],
                                                      failing: list[str]) -> None:
    report = quality.compare(task, candidate, live, 0.05, {}, "test", 10)
    assert [f.split()[0] for f in report.failures] == failing
    table = report.table()
    assert table[0] == f"task: {task}" and len(table) == len(candidate) + 2  # the task, the header, each metric


def test_a_per_metric_threshold_overrides_the_default() -> None:
    report = quality.compare("regression", {"rmse": 63.0, "mae": 47.0, "r2": 0.40},
                             {"rmse": 58.4, "mae": 47.0, "r2": 0.40}, 0.05, {"rmse": 0.10}, "test", 10)
    assert report.ok and report.thresholds == {"rmse": 0.10, "mae": 0.05, "r2": 0.05}


def test_log_loss_is_shown_and_gates_only_when_a_threshold_names_it() -> None:
    cand, live = {"accuracy": 0.96, "f1_macro": 0.96, "log_loss": 0.30}, {"accuracy": 0.96, "f1_macro": 0.96,
                                                                            "log_loss": 0.14}
    assert quality.compare("classification", cand, live, 0.05, {}, "test", 45).ok
    named = quality.compare("classification", cand, live, 0.05, {"log_loss": 0.5}, "test", 45)
    assert [f.split()[0] for f in named.failures] == ["log_loss"]


def test_a_csv_holdout_with_a_label_column(tmp_path: Path) -> None:
    path = tmp_path / "holdout.csv"
    path.write_text("a,b,target\n1,2,0\n3,4.5,1\n")
    h = quality.load_holdout(str(path), "classification", "target")
    assert (h.x, h.y, h.columns) == ([[1.0, 2.0], [3.0, 4.5]], [0, 1], ["a", "b"])
    with pytest.raises(quality.HoldoutError, match="no label column 'label'"):
        quality.load_holdout(str(path), "classification")


def test_bundled_holdouts_exist_for_both_reference_tasks() -> None:
    assert len(quality.load_holdout("", "classification").x) == 45
    diabetes = quality.load_holdout("", "regression")
    assert len(diabetes.x) == 133 and len(diabetes.columns) == 10


def test_drift_from_class_counts_and_value_histograms() -> None:
    text = 'predictions_total{class="a"} 10\npredictions_total{class="b"} 30\n'
    assert drift.distribution(text) == {"a": 10.0, "b": 30.0}
    hist = ('prediction_value_bucket{le="1.0"} 4\nprediction_value_bucket{le="2.0"} 10\n'
            'prediction_value_bucket{le="+Inf"} 12\n')
    assert drift.distribution(hist) == {"le 1": 4.0, "le 2": 6.0, "le inf": 2.0}
    same = drift.judge({"a": 100, "b": 100}, {"a": 98, "b": 102}, 0.1, 0.25, 50)
    assert same.psi is not None and same.psi < 0.01 and not same.failed
    moved = drift.judge({"a": 10, "b": 190}, {"a": 100, "b": 100}, 0.1, 0.25, 50)
    assert moved.failed and moved.psi == pytest.approx(drift.psi({"a": 10, "b": 190}, {"a": 100, "b": 100}), abs=1e-4)
    few = drift.judge({"a": 3}, {"a": 100}, 0.1, 0.25, 50)
    assert few.psi is None and not few.failed and "too few predictions" in few.note


def test_a_latency_histogram_can_be_selected_by_labels() -> None:
    from bluegreen.orchestrator.analysis.steps import parse_buckets

    text = (
        'rest_server_request_duration_seconds_bucket{app_name="m",le="0.005",method="GET",path="/v2/models/{m}"} 9\n'
        'rest_server_request_duration_seconds_bucket{app_name="m",le="+Inf",method="GET",path="/v2/models/{m}"} 9\n'
        'rest_server_request_duration_seconds_bucket{app_name="m",le="0.005",method="POST",path="/v2/x/infer"} 3\n'
        'rest_server_request_duration_seconds_bucket{app_name="m",le="+Inf",method="POST",path="/v2/x/infer"} 5\n')
    assert parse_buckets(text, 'rest_server_request_duration_seconds{path="/v2/x/infer"}') == ((0.005, 3.0),
                                                                                              (math.inf, 5.0))
    assert parse_buckets(text, "rest_server_request_duration_seconds") == ((0.005, 12.0), (math.inf, 14.0))
    assert parse_buckets('predict_latency_seconds_bucket{le="0.1"} 2\n', "predict_latency_seconds") == ((0.1, 2.0),)


@pytest.mark.parametrize(("labels", "task", "why"), [
    (["setosa", "virginica", "setosa"], "classification", "the labels are 2 classes (setosa, virginica)"),
    ([0, 1, 2, 1, 0, 2], "classification", "3 integer classes"),
    ([1.0, 0.0, 2.0], "classification", "3 integer classes"),  # JSON's 1.0 is a class id too
    ([151.5, 75.0, 141.0], "regression", "1 of 3 labels are fractional"),
    (list(range(100, 400, 3)), "regression", "100 distinct integer labels in 100 rows are amounts"),
])
def test_the_task_is_inferred_from_the_labels(labels: list[Any], task: str, why: str) -> None:
    """Strings and few integers are classes; fractions, or integers nearly all distinct, are amounts."""
    choice = quality.choose_task("auto", labels)
    assert choice.task == task and why in choice.reason


def test_with_no_holdout_the_task_comes_from_the_image_label_else_classification() -> None:
    assert quality.choose_task("auto", None, "regression").task == "regression"
    assert quality.choose_task("auto", None, None) == quality.TaskChoice(
        "classification", "no holdout and no task label: the bundled iris holdout (classes)")
    assert quality.choose_task("regression", None, "classification").reason == "analysis.task"


@pytest.mark.parametrize(("task", "labels", "message"), [
    ("classification", [151.5, 75.0, 141.0], "classification needs classes, and 1 of 3 labels are fractional"),
    ("regression", ["setosa", "virginica"], "regression needs numeric labels, and 'setosa' is not a number"),
])
def test_a_task_setting_that_contradicts_the_labels_is_refused(task: str, labels: list[Any], message: str) -> None:
    with pytest.raises(quality.HoldoutError, match=f"analysis.task = '{task}' contradicts the holdout's labels: "
                                                   f"{message}"):
        quality.choose_task(task, labels)


def _report(task: str, candidate: dict[str, float], live: dict[str, float]) -> quality.QualityReport:
    return quality.compare(task, candidate, live, 0.05, {}, "test", 4)


def test_metrics_that_cannot_decide_make_the_check_inconclusive_never_a_pass() -> None:
    """Continuous labels under classification, one class, a constant answer, or 0 for both: the check fails."""
    zero = _report("classification", {"accuracy": 0.0, "f1_macro": 0.0}, {"accuracy": 0.0, "f1_macro": 0.0})
    assert zero.failures == []  # no metric got worse ...
    zero.inconclusive = quality.inconclusive(zero, [151.5, 75.5, 141.0, 80.0], [1, 2, 0, 1])
    assert not zero.ok  # ... and still it does not pass
    assert zero.inconclusive == [
        "classification needs classes, and 2 of 4 labels are fractional amounts (such as 151.5): set analysis.task "
        "= \"regression\", or \"auto\" to infer",
        "accuracy, f1_macro are 0 for both models: nothing was measured"]
    assert zero.problems()[0].startswith("inconclusive: classification needs classes")
    assert zero.table()[-1].startswith("INCONCLUSIVE: accuracy, f1_macro are 0")

    good = _report("classification", {"accuracy": 1.0, "f1_macro": 1.0}, {"accuracy": 1.0, "f1_macro": 1.0})
    assert quality.inconclusive(good, [1, 1, 1, 1], [1, 1, 1, 1])[0] == (
        "every one of the 4 holdout labels is 1: no metric tells models apart on one class or value")

    constant = _report("regression", {"rmse": 60.0, "mae": 50.0, "r2": -0.01}, {"rmse": 58.0, "mae": 47.0, "r2": 0.4})
    assert quality.inconclusive(constant, [151.0, 75.0, 141.0, 206.0], [152.1, 152.1, 152.1, 152.1]) == [
        "the candidate answered 152.1 for every one of the 4 holdout rows: a constant answer is not a model to judge"]
    assert quality.inconclusive(good, [0, 1, 2, 1], [0, 1, 2, 1]) == []  # a real comparison is conclusive
