"""The reference models: loading, and predictions fast enough to answer one row per request.

A model answers ``Prediction``s: for a classifier the class id (``value``), its name, the
probability of each class; for a regressor the predicted number. The ``baseline`` variant is
the fallback with no learned parameters: petal thresholds for iris, the training mean for a
regressor.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAST_UP_TO = 64  # rows; a bigger batch is faster through scikit-learn's vectorised path


@dataclass(frozen=True)
class Prediction:
    value: float | int  # the class id, or the predicted number
    label: str | None = None  # the class name
    probabilities: tuple[float, ...] | None = None

    @property
    def score(self) -> float | None:
        return None if self.probabilities is None else max(self.probabilities)


@dataclass(frozen=True)
class Family:
    """What every version of one model family shares: its task, inputs, and output vocabulary."""

    task: str  # classification | regression
    columns: tuple[str, ...]
    classes: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()  # bounds of the prediction histogram (regression)
    target_std: float = 1.0
    target_mean: float = 0.0


def fast_predictor(model: Any) -> Callable[[list[list[float]]], list[Any]] | None:
    """The model's arithmetic without scikit-learn's per-call overhead, for small batches.

    scikit-learn validates its input and, for a forest, dispatches every tree through joblib on
    each call: about 5 ms for a 50-tree forest and one row, whatever the batch size. A server that
    answers one row per request does the same arithmetic directly: trees walked in plain Python
    (about 30 µs a row for 50 trees), linear models in numpy. For a classifier it returns class
    probabilities, for a regressor the values. ``LearnedModel`` checks the result against
    scikit-learn at load, so a model this does not understand, or understands wrongly, is served
    by scikit-learn unchanged.
    """
    import numpy as np

    classifier = hasattr(model, "classes_")
    n_classes = len(model.classes_) if classifier else 1
    estimators = getattr(model, "estimators_", None)
    trees = [model] if hasattr(model, "tree_") else estimators if estimators is not None else None
    if trees is not None and len(trees) and all(hasattr(t, "tree_") for t in trees):
        packed = []
        for estimator in trees:
            tree = estimator.tree_
            value = tree.value[:, 0, :n_classes].astype(float)
            if classifier:
                total = value.sum(axis=1, keepdims=True)
                total[total == 0] = 1.0
                value = value / total
            packed.append((tree.children_left.tolist(), tree.children_right.tolist(), tree.feature.tolist(),
                           tree.threshold.tolist(), value.tolist()))
        share = 1.0 / len(packed)

        def walk(rows: list[list[float]]) -> list[Any]:
            out: list[Any] = []
            for raw in rows:
                row = np.asarray(raw, dtype=np.float32).tolist()  # the trees compare float32 features
                acc = [0.0] * n_classes
                for left, right, feature, threshold, value in packed:
                    node = 0
                    while left[node] != -1:
                        node = left[node] if row[feature[node]] <= threshold[node] else right[node]
                    for c, v in enumerate(value[node]):
                        acc[c] += v
                out.append([a * share for a in acc] if classifier else acc[0] * share)
            return out

        return walk
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", None)
    if coef is None or intercept is None:
        return None
    weights = np.asarray(coef, dtype=np.float64)
    if classifier and n_classes > 2:
        w, b = weights.T, np.asarray(intercept, dtype=np.float64)

        def softmax(rows: list[list[float]]) -> list[Any]:
            z = np.asarray(rows, dtype=np.float64) @ w + b
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return (e / e.sum(axis=1, keepdims=True)).tolist()  # type: ignore[no-any-return]

        return softmax
    if not classifier and weights.ndim == 1:
        b0 = float(np.asarray(intercept).reshape(-1)[0])

        def linear(rows: list[list[float]]) -> list[Any]:
            return (np.asarray(rows, dtype=np.float64) @ weights + b0).tolist()  # type: ignore[no-any-return]

        return linear
    return None


class LearnedModel:
    def __init__(self, saved: dict[str, Any], family: Family) -> None:
        import numpy as np

        self.model = saved["model"]
        self.columns = saved["features"]  # indices the model reads, or None for all
        self.family = family
        self.name = type(self.model).__name__
        self.classifier = family.task == "classification"
        self.fast = fast_predictor(self.model)
        probe = self._select(_probe_rows(len(family.columns)))
        if self.fast is not None and not np.allclose(self.fast(probe), self._slow(probe), atol=1e-9):
            self.fast = None

    def _select(self, rows: list[list[float]]) -> list[list[float]]:
        return [[row[i] for i in self.columns] for row in rows] if self.columns else rows

    def _slow(self, x: list[list[float]]) -> Any:
        return self.model.predict_proba(x) if self.classifier else self.model.predict(x)

    def predict(self, rows: list[list[float]]) -> list[Prediction]:
        x = self._select(rows)
        raw = self.fast(x) if self.fast is not None and len(x) <= FAST_UP_TO else self._slow(x)
        if not self.classifier:
            return [Prediction(float(v)) for v in raw]
        out = []
        for p in raw:
            probabilities = tuple(float(v) for v in p)
            best = max(range(len(probabilities)), key=probabilities.__getitem__)
            out.append(Prediction(best, self.family.classes[best], probabilities))
        return out


class BaselineModel:
    """The fallback with no learned parameters: petal thresholds (iris) or the training mean (regression)."""

    name = "rules"

    def __init__(self, family: Family) -> None:
        self.family = family

    def predict(self, rows: list[list[float]]) -> list[Prediction]:
        if self.family.task == "regression":
            return [Prediction(self.family.target_mean) for _ in rows]
        out = []
        for _sl, _sw, petal_length, petal_width in rows:
            cls, p = (0, 1.0) if petal_length < 2.45 else (1, 0.9) if petal_width < 1.75 else (2, 0.9)
            rest = (1.0 - p) / 2
            out.append(Prediction(cls, self.family.classes[cls], tuple(p if i == cls else rest for i in range(3))))
        return out


def _probe_rows(width: int) -> list[list[float]]:
    """Rows spread over the feature space, scored both ways when a model loads."""
    import numpy as np

    rng = np.random.default_rng(7)
    if width == 4:  # iris: around the real ranges, where the classes' boundaries are
        return rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(16, 4)).tolist()  # type: ignore[no-any-return]
    return rng.normal(0.0, 0.05, size=(16, width)).tolist()  # type: ignore[no-any-return]


def load(models_dir: Path, variant: str, quality: str) -> tuple[LearnedModel | BaselineModel, Family]:
    with open(models_dir / "good.pkl", "rb") as fh:
        good = pickle.load(fh)
    family = Family(task=good.get("task", "classification"), columns=tuple(good["columns"]),
                    classes=tuple(good.get("classes", ())), buckets=tuple(good.get("buckets", ())),
                    target_std=float(good.get("target_std", 1.0)), target_mean=float(good.get("target_mean", 0.0)))
    if variant == "baseline":
        return BaselineModel(family), family
    if quality == "degraded":
        with open(models_dir / "degraded.pkl", "rb") as fh:
            return LearnedModel(pickle.load(fh), family), family
    return LearnedModel(good, family), family
