"""Train the reference models at image build time on data sets that ship inside scikit-learn.

Two tasks, one server:

- classification (iris): ``good.pkl`` is logistic regression for v1 and a random forest for v2,
  both accurate; ``degraded.pkl`` is trained on one weak feature.
- regression (diabetes): ``good.pkl`` is a depth-3 decision tree for v1 and a ridge regression
  for v2 (v2 is the better one); ``degraded.pkl`` is a linear model on age alone.

``metrics.json`` records each model's figures on the fixed holdout split; for a regressor it also
records the bucket bounds of the prediction histogram the server exposes (training target
deciles), so every version of one model family shares them.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeRegressor

SEED = 7
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
DIABETES_COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def classification(version: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    good: Any = RandomForestClassifier(n_estimators=50, random_state=SEED) if version == "v2" \
        else LogisticRegression(max_iter=500)
    good.fit(x_train, y_train)
    weak = [1]  # sepal width alone separates the classes poorly: a plausible but clearly worse model
    degraded = LogisticRegression(max_iter=500).fit(x_train[:, weak], y_train)
    metrics = {"task": "classification", "algorithm": type(good).__name__,
               "good_accuracy": float(good.score(x_test, y_test)),
               "degraded_accuracy": float(degraded.score(x_test[:, weak], y_test))}
    common = {"task": "classification", "columns": IRIS_COLUMNS, "classes": ["setosa", "versicolor", "virginica"]}
    return ({"model": good, "features": None, **common}, {"model": degraded, "features": weak, **common}, metrics)


def regression(version: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED)
    good: Any = Ridge(alpha=0.1) if version == "v2" else DecisionTreeRegressor(max_depth=3, random_state=SEED)
    good.fit(x_train, y_train)
    weak = [0]  # age alone explains almost nothing
    degraded = LinearRegression().fit(x_train[:, weak], y_train)

    def figures(model: Any, cols: list[int] | None) -> dict[str, float]:
        p = model.predict(x_test if cols is None else x_test[:, cols])
        return {"r2": float(r2_score(y_test, p)), "rmse": float(mean_squared_error(y_test, p) ** 0.5)}

    buckets = [float(round(b, 1)) for b in np.quantile(y_train, np.linspace(0.1, 0.9, 9))]
    metrics = {"task": "regression", "algorithm": type(good).__name__, "good": figures(good, None),
               "degraded": figures(degraded, weak), "prediction_buckets": buckets}
    common = {"task": "regression", "columns": DIABETES_COLUMNS, "buckets": buckets,
              "target_std": float(np.std(y_train)), "target_mean": float(np.mean(y_train))}
    return ({"model": good, "features": None, **common}, {"model": degraded, "features": weak, **common}, metrics)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", required=True)
    parser.add_argument("--task", choices=("classification", "regression"), default="classification")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    good, degraded, metrics = (regression if args.task == "regression" else classification)(args.version)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "good.pkl", "wb") as fh:
        pickle.dump(good, fh)
    with open(args.out / "degraded.pkl", "wb") as fh:
        pickle.dump(degraded, fh)
    metrics["version"] = args.version
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
