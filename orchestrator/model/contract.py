"""The model contract: how bluegreen talks to a model server it did not write.

A *profile* fills in the protocol of a known server family; every part can be overridden in
``[model]``:

- ``reference``        bluegreen's own server: ``/health``, ``/version``, ``/predict`` with
                       ``{"instances": rows}``, ``/metrics`` with a latency histogram.
- ``mlflow``           MLflow's scoring server: ``/ping``, ``/invocations`` with
                       ``dataframe_split``; its ``/version`` is MLflow's own, so the version is
                       read from an image label.
- ``open-inference``   the Open Inference Protocol v2 (KServe, MLServer, Triton):
                       ``/v2/health/ready``, ``/v2/models/{model}/infer`` with an FP64 tensor.
- ``custom``           nothing assumed: every part comes from the settings.

Requests are JSON templates in which a string that is exactly one of ``$rows`` (a list of
feature rows), ``$flat`` (the rows flattened), ``$records`` (a list of {column: value}),
``$columns``, ``$n`` (rows) or ``$width`` (features) is replaced; ``{model}`` in a path is the
model's name. Answers are read with JSON pointers (RFC 6901). Standard library only: the
commands that must start fast resolve the contract too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

PROFILES = ("reference", "mlflow", "open-inference", "custom")
PLACEHOLDERS = ("$rows", "$flat", "$records", "$columns", "$n", "$width")


@dataclass(frozen=True)
class Contract:
    profile: str
    name: str  # the model's name, for {model} in paths
    ready_path: str
    ready_status: int
    version_from: str  # endpoint | label | none
    version_path: str
    version_pointer: str
    version_label: str
    predict_path: str
    request: str  # a JSON template
    predictions: str  # pointer to the list of predictions in an answer
    prediction: str  # pointer inside one prediction to its value ("" = the element itself)
    probabilities: str  # pointer inside one prediction to its class probabilities ("" = none)
    metrics_path: str  # "" = the server has no Prometheus metrics bluegreen can read
    metrics_port: str  # "" = the colour's port, else the name of one of its extra ports
    latency_histogram: str  # a histogram family in the metrics ("" = none)
    probabilities_required: bool = True  # False: answers without the probabilities pointer give none


    def path(self, template: str) -> str:
        return template.replace("{model}", self.name)

    def body(self, rows: list[list[float]], columns: list[str]) -> bytes:
        """The request for ``rows``, from the template."""
        return json.dumps(fill(json.loads(self.request), rows, columns)).encode()

    def read(self, answer: Any, expected: int) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions (and class probabilities, when the contract names them) from a decoded answer.

        Raises ContractMismatch saying which pointer found what, so a wrong contract is named.
        """
        items = pointer(answer, self.predictions, "predictions")
        if not isinstance(items, list):
            raise ContractMismatch(f"model.predictions = {self.predictions!r} points at {_kind(items)}, not a list")
        if len(items) != expected:
            raise ContractMismatch(f"model.predictions = {self.predictions!r} has {len(items)} predictions for "
                                   f"{expected} rows")
        values = [pointer(item, self.prediction, "prediction") for item in items]
        bad = next((v for v in values if not isinstance(v, str | int | float) or isinstance(v, bool)), None)
        if bad is not None:
            raise ContractMismatch(f"model.prediction = {self.prediction!r} points at {_kind(bad)}, not a number "
                                   "or a label")
        probabilities = None
        if self.probabilities and not self.probabilities_required and not all(
                _has(item, self.probabilities) for item in items):
            return values, None
        if self.probabilities:
            probabilities = [pointer(item, self.probabilities, "probabilities") for item in items]
            if not all(isinstance(p, list) and all(isinstance(v, int | float) for v in p) for p in probabilities):
                raise ContractMismatch(f"model.probabilities = {self.probabilities!r} does not point at lists of "
                                       "numbers")
        return values, probabilities


def _has(item: Any, path: str) -> bool:
    try:
        pointer(item, path)
    except ContractMismatch:
        return False
    return True


class ContractMismatch(Exception):
    """An answer that does not have the shape the contract describes."""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(value), "a number")


def pointer(doc: Any, path: str, what: str = "value") -> Any:
    """Resolve a JSON pointer (RFC 6901) in ``doc``; ContractMismatch naming where it stopped."""
    if path == "":
        return doc
    if not path.startswith("/"):
        raise ContractMismatch(f"{what} pointer {path!r} must start with /")
    current = doc
    walked = ""
    for raw in path[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        walked += "/" + raw
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            keys = f" (it has {', '.join(sorted(map(str, current))[:8])})" if isinstance(current, dict) else ""
            raise ContractMismatch(f"the answer has nothing at {walked}{keys}")
    return current


def fill(template: Any, rows: list[list[float]], columns: list[str]) -> Any:
    """The template with each placeholder string replaced by what it names."""
    if isinstance(template, dict):
        return {k: fill(v, rows, columns) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, rows, columns) for v in template]
    if template == "$rows":
        return rows
    if template == "$flat":
        return [v for row in rows for v in row]
    if template == "$records":
        return [dict(zip(columns, row, strict=True)) for row in rows]
    if template == "$columns":
        return list(columns)
    if template == "$n":
        return len(rows)
    if template == "$width":
        return len(rows[0]) if rows else len(columns)
    return template


_REFERENCE = Contract(
    profile="reference", name="model", ready_path="/health", ready_status=200, version_from="endpoint",
    version_path="/version", version_pointer="/version", version_label="bluegreen.model-version",
    predict_path="/predict", request='{"instances": "$rows"}', predictions="/predictions", prediction="/value",
    probabilities="/probabilities", metrics_path="/metrics", metrics_port="",
    latency_histogram="predict_latency_seconds")
DEFAULTS: dict[str, Contract] = {
    "reference": _REFERENCE,
    "mlflow": replace(_REFERENCE, profile="mlflow", ready_path="/ping", version_from="label", version_path="",
                      version_pointer="", predict_path="/invocations",
                      request='{"dataframe_split": {"columns": "$columns", "data": "$rows"}}',
                      predictions="/predictions", prediction="", probabilities="", metrics_path="",
                      latency_histogram=""),
    "open-inference": replace(_REFERENCE, profile="open-inference", ready_path="/v2/health/ready",
                              version_from="endpoint", version_path="/v2/models/{model}",
                              version_pointer="/versions/0", predict_path="/v2/models/{model}/infer",
                              request='{"inputs": [{"name": "input-0", "shape": ["$n", "$width"], "datatype": '
                                      '"FP64", "data": "$rows"}]}',
                              predictions="/outputs/0/data", prediction="", probabilities="", metrics_path="",
                              latency_histogram=""),
}
# What a custom contract must name, because no default can guess it.
REQUIRED_FOR_CUSTOM = ("ready_path", "predict_path", "request", "predictions")


def resolve(model: Any, task: str = "auto") -> Contract:
    """The contract from a ``[model]`` section (validated model or cached view): profile + overrides."""
    base = DEFAULTS.get(model.profile, _REFERENCE)
    if model.profile == "custom":
        base = replace(_REFERENCE, profile="custom", version_from="none", prediction="", probabilities="",
                       metrics_path="", latency_histogram="")
    overrides = {f: getattr(model, f) for f in Contract.__dataclass_fields__
                 if f not in ("profile",) and getattr(model, f, None) is not None}
    contract = replace(base, **overrides)
    if task == "regression" and model.probabilities is None:
        contract = replace(contract, probabilities="")
    elif task == "auto" and model.probabilities is None:
        # The profile's pointer is a guess that fits classifiers: a regressor's answers lack it, and that is no
        # mismatch. A pointer the team set is required.
        contract = replace(contract, probabilities_required=False)
    return contract


def check_template(text: str) -> str:
    """A request template must be JSON and name the rows somewhere."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"must be a JSON template: {exc}") from None
    if not any(p in json.dumps(doc) for p in ('"$rows"', '"$flat"', '"$records"')):
        raise ValueError('must contain "$rows", "$flat" or "$records" where the feature rows go')
    return text
