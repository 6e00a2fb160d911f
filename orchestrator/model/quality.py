"""Model quality: labelled holdouts, the metrics that fit the task, and the candidate-vs-live rule.

Classification: accuracy, F1 macro, and log loss when the server returns class probabilities.
Regression: RMSE, MAE and R². Each metric has a direction; a candidate fails when any metric is
worse than the live model's by more than its threshold, relative to the live figure (the seeds'
rule: more than 5 % worse rolls back). Standard library only.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

HIGHER_IS_BETTER = {"accuracy": True, "f1_macro": True, "log_loss": False, "rmse": False, "mae": False, "r2": True}
METRICS = {"classification": ("accuracy", "f1_macro", "log_loss"), "regression": ("rmse", "mae", "r2")}
PRIMARY = {"classification": "accuracy", "regression": "r2"}
# Log loss moves with calibration as much as with skill (a forest and a logistic regression of
# equal accuracy differ by tens of percent): it is shown, and gates only when a threshold names it.
SHOWN_ONLY = frozenset({"log_loss"})
BUNDLED = {"classification": "data/iris_holdout.json", "regression": "data/diabetes_holdout.json"}


# Integer labels are classes when there are few of them: at most this many distinct values, or at
# most this share of the rows (a 50-class holdout of 5,000 rows). More, and they are amounts.
MAX_CLASSES = 20
MAX_CLASS_SHARE = 0.05


class HoldoutError(Exception):
    pass


@dataclass(frozen=True)
class TaskChoice:
    """The task the quality checks judge, and why: the setting, the holdout's labels, or the image's label."""

    task: str
    reason: str


def _numbers(labels: list[Any]) -> list[float] | None:
    out = []
    for v in labels:
        if isinstance(v, bool):
            return None
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return None
    return out


def infer_task(labels: list[Any]) -> TaskChoice:
    """What labels say the model does: classes (strings, or few integers) or amounts."""
    distinct = {str(v) for v in labels}
    numbers = _numbers(labels)
    if numbers is None:
        shown = ", ".join(sorted(distinct)[:4]) + (", …" if len(distinct) > 4 else "")
        return TaskChoice("classification", f"inferred: the labels are {len(distinct)} classes ({shown})")
    fractional = sum(1 for v in numbers if v != int(v))
    if fractional:
        return TaskChoice("regression", f"inferred: {fractional} of {len(numbers)} labels are fractional amounts")
    values = {int(v) for v in numbers}
    if len(values) <= MAX_CLASSES or len(values) <= MAX_CLASS_SHARE * len(numbers):
        return TaskChoice("classification", f"inferred: the labels are {len(values)} integer classes")
    return TaskChoice("regression", f"inferred: {len(values)} distinct integer labels in {len(numbers)} rows are "
                                    "amounts, not classes (set analysis.task = \"classification\" if they are classes)")


def contradiction(task: str, labels: list[Any]) -> str | None:
    """Why ``task`` cannot be judged on these labels (None: it can)."""
    numbers = _numbers(labels)
    if task == "regression" and numbers is None:
        bad = next(v for v in labels if _numbers([v]) is None)
        return f"regression needs numeric labels, and {bad!r} is not a number"
    if task == "classification" and numbers is not None:
        fractional = [v for v in numbers if v != int(v)]
        if fractional:
            return (f"classification needs classes, and {len(fractional)} of {len(numbers)} labels are fractional "
                    f"amounts (such as {fractional[0]!r}): set analysis.task = \"regression\", or \"auto\" to infer")
    return None


def choose_task(setting: str, labels: list[Any] | None, image_task: str | None = None) -> TaskChoice:
    """The task to judge: the setting when it names one, else the holdout's labels, else the image's label.

    Raises HoldoutError when the setting contradicts the labels.
    """
    if setting != "auto":
        if labels is not None:
            why = contradiction(setting, labels)
            if why is not None:
                raise HoldoutError(f"analysis.task = {setting!r} contradicts the holdout's labels: {why}")
        return TaskChoice(setting, "analysis.task")
    if labels is not None:
        return infer_task(labels)
    if image_task in METRICS:
        return TaskChoice(image_task, "the image's label bluegreen.model-task (no holdout set)")
    return TaskChoice("classification", "no holdout and no task label: the bundled iris holdout (classes)")


@dataclass(frozen=True)
class Holdout:
    x: list[list[float]]
    y: list[Any]
    columns: list[str]
    source: str


def load_holdout(path: str, task: str, label_column: str = "label", root: Path | None = None) -> Holdout:
    """A labelled holdout: JSON {"x": [[...]], "y": [...], "columns": [...]} or CSV with a label column.

    An empty path means the bundled holdout of the reference models for ``task``.
    """
    if not path:
        name = BUNDLED[task]
        return _from_json(json.loads(resources.files("bluegreen.orchestrator").joinpath(name).read_text()),
                          f"bundled {name.split('/')[-1]}")
    file = Path(path) if root is None or Path(path).is_absolute() else root / path
    try:
        text = file.read_text()
    except OSError as exc:
        raise HoldoutError(f"cannot read the holdout {file}: {exc.strerror}") from None
    try:
        if file.suffix.lower() == ".csv":
            return _from_csv(text, label_column, str(file))
        return _from_json(json.loads(text), str(file))
    except (ValueError, KeyError, TypeError) as exc:
        raise HoldoutError(f"the holdout {file} is not usable: {exc}") from None


def _from_json(doc: dict[str, Any], source: str) -> Holdout:
    x = [[float(v) for v in row] for row in doc["x"]]
    y = list(doc["y"])
    if len(x) != len(y) or not x:
        raise ValueError(f"x has {len(x)} rows and y {len(y)} labels")
    columns = list(doc.get("columns") or [f"f{i}" for i in range(len(x[0]))])
    if len(columns) != len(x[0]):
        raise ValueError(f"{len(columns)} columns for rows of {len(x[0])} features")
    return Holdout(x, y, columns, source)


def _from_csv(text: str, label_column: str, source: str) -> Holdout:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or label_column not in reader.fieldnames:
        raise ValueError(f"no label column {label_column!r} (columns: {', '.join(reader.fieldnames or [])}); "
                         "set analysis.label_column")
    columns = [c for c in reader.fieldnames if c != label_column]
    x: list[list[float]] = []
    y: list[Any] = []
    for n, row in enumerate(reader, start=2):
        try:
            x.append([float(row[c]) for c in columns])
        except ValueError:
            raise ValueError(f"line {n}: a feature is not a number") from None
        label = row[label_column]
        try:
            y.append(float(label) if "." in label else int(label))
        except ValueError:
            y.append(label)
    if not x:
        raise ValueError("it has no rows")
    return Holdout(x, y, columns, source)


def same_label(a: Any, b: Any) -> bool:
    """Label equality across JSON types: 1 == 1.0 == "1"; "setosa" == "setosa"."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def metrics(task: str, predicted: list[Any], truth: list[Any],
            probabilities: list[list[float]] | None = None) -> dict[str, float]:
    """The task's metrics for one model's predictions on the holdout."""
    n = len(truth)
    if task == "regression":
        p = [float(v) for v in predicted]
        t = [float(v) for v in truth]
        sse = sum((a - b) ** 2 for a, b in zip(p, t, strict=True))
        mean = sum(t) / n
        sst = sum((b - mean) ** 2 for b in t)
        return {"rmse": math.sqrt(sse / n), "mae": sum(abs(a - b) for a, b in zip(p, t, strict=True)) / n,
                "r2": 1 - sse / sst if sst else 0.0}
    out = {"accuracy": sum(same_label(a, b) for a, b in zip(predicted, truth, strict=True)) / n}
    labels = {str(v) for v in truth} | {str(v) for v in predicted}
    f1s = []
    for label in sorted(labels):
        tp = sum(str(a) == label and same_label(a, b) for a, b in zip(predicted, truth, strict=True))
        fp = sum(str(a) == label and not same_label(a, b) for a, b in zip(predicted, truth, strict=True))
        fn = sum(str(b) == label and not same_label(a, b) for a, b in zip(predicted, truth, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    out["f1_macro"] = sum(f1s) / len(f1s)
    if probabilities is not None and all(isinstance(v, int) for v in truth):
        eps = 1e-15
        out["log_loss"] = -sum(math.log(min(1 - eps, max(eps, probs[int(t)]))) if int(t) < len(probs) else
                               math.log(eps) for probs, t in zip(probabilities, truth, strict=True)) / n
    return out


def degradation(name: str, candidate: float, live: float) -> float:
    """How much worse the candidate is, relative to live (positive: worse; negative: better)."""
    worse = (live - candidate) if HIGHER_IS_BETTER[name] else (candidate - live)
    return worse / abs(live) if live else worse


@dataclass
class QualityReport:
    task: str
    source: str
    rows: int
    primary: str
    candidate: dict[str, float]
    live: dict[str, float]
    degradation: dict[str, float]
    thresholds: dict[str, float | None]  # None: shown, not gated
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    task_reason: str = ""  # why this task: the setting, the labels, the image's label
    inconclusive: list[str] = field(default_factory=list)  # why no metric could decide (fails too)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.inconclusive

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> list[str]:
        """The task judged and why, then candidate | live | change, one line per metric (change: + is better),
        then why the check is inconclusive, if it is."""
        lines = [f"task: {self.task}" + (f" ({self.task_reason})" if self.task_reason else ""),
                 f"{'metric':<10} {'candidate':>10} {'live':>10} {'change':>8}  limit"]
        for name in self.candidate:
            change = -self.degradation[name]
            mark = "  FAIL" if any(f.startswith(f"{name} ") for f in self.failures) else ""
            limit = self.thresholds[name]
            lines.append(f"{name:<10} {self.candidate[name]:>10.4f} {self.live[name]:>10.4f} {change:>+8.1%}  "
                         + (f"-{limit:.0%}" if limit is not None else "(shown only)") + mark)
        lines += [f"INCONCLUSIVE: {why}" for why in self.inconclusive]
        return lines

    def problems(self) -> list[str]:
        """What fails the check: metrics worse than their limits, and why no metric could decide."""
        return self.failures + [f"inconclusive: {why}" for why in self.inconclusive]

    def summary(self) -> str:
        p = self.primary
        return f"{p} {self.candidate[p]:.3f} (live {self.live[p]:.3f})"


def compare(task: str, candidate: dict[str, float], live: dict[str, float], default_threshold: float,
            thresholds: dict[str, float], source: str, rows: int, primary: str = "") -> QualityReport:
    names = [m for m in METRICS[task] if m in candidate and m in live]
    limits: dict[str, float | None] = {
        m: thresholds.get(m, None if m in SHOWN_ONLY else default_threshold) for m in names}
    worse = {m: degradation(m, candidate[m], live[m]) for m in names}
    failures = []
    for m in names:
        limit = limits[m]
        if limit is not None and worse[m] > limit:
            failures.append(f"{m} {candidate[m]:.4f} is {worse[m]:.1%} worse than the live model's {live[m]:.4f} "
                            f"(limit {limit:.0%})")
    return QualityReport(task, source, rows, primary or PRIMARY[task], {m: candidate[m] for m in names},
                         {m: live[m] for m in names}, worse, limits, failures)


def inconclusive(report: QualityReport, truth: list[Any], candidate_answers: list[Any]) -> list[str]:
    """Why the report's metrics cannot tell the models apart; a check that could not decide never passes.

    Labels the task cannot be judged on (amounts under classification), a holdout of one class or
    value, a candidate that gives one answer for every row, and a gated metric at zero for both.
    """
    out = []
    why = contradiction(report.task, truth)
    if why is not None:
        out.append(why)
    if len({str(v) for v in truth}) == 1:
        out.append(f"every one of the {len(truth)} holdout labels is {truth[0]!r}: no metric tells models apart "
                   "on one class or value")
    if len(candidate_answers) > 1 and len({str(v) for v in candidate_answers}) == 1:
        out.append(f"the candidate answered {candidate_answers[0]!r} for every one of the {len(candidate_answers)} "
                   "holdout rows: a constant answer is not a model to judge")
    zero = [m for m, limit in report.thresholds.items()
            if limit is not None and report.candidate[m] == 0 and report.live[m] == 0]
    if zero:
        out.append(f"{', '.join(zero)} {'is' if len(zero) == 1 else 'are'} 0 for both models: nothing was measured")
    return out
