"""``bluegreen doctor``: a running colour probed against the model contract, one part at a time.

Each check says what it asked, what came back, and which settings key it tested, so that a
server that does not match ``[model]`` is diagnosed before a release depends on it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.analysis import replay
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError, InvalidRequest
from bluegreen.orchestrator.model import quality
from bluegreen.orchestrator.model.client import ModelClient


@dataclass
class Check:
    name: str
    outcome: str  # ok | FAIL | skip
    detail: str
    key: str = ""  # the settings key this check tests


@dataclass
class Diagnosis:
    color: str
    url: str
    profile: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.outcome != "FAIL" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def diagnose(dep: Deployment, color: str | None = None) -> Diagnosis:
    target = color or dep.state.live_color()
    if target is None:
        raise InvalidRequest("nothing is live and no colour was named", "bluegreen doctor blue, or bluegreen up")
    c = dep.contract
    d = Diagnosis(target, dep.url(target), c.profile)
    info = dep.runtime.inspect(target)
    if info is None or not info.running:
        state = "absent" if info is None else info.state
        d.checks.append(Check("container", "FAIL", f"{target} is {state}", ""))
        return d
    d.checks.append(Check("container", "ok", f"{info.name} runs {info.image}"))
    with ModelClient(d.url, c) as client:
        ok, what = client.ready()
        d.checks.append(Check("ready", "ok" if ok else "FAIL", f"{what} (expected {c.ready_status})",
                              "model.ready_path, model.ready_status"))
        _version(d, client, dep, info.image)
        holdout = _holdout(d, dep)
        if holdout is not None:
            _predict(d, client, holdout, dep.task.task)
        _metrics(d, dep, target)
        _replay_source(d, dep, holdout)
    return d


def _version(d: Diagnosis, client: ModelClient, dep: Deployment, image: str) -> None:
    c = client.contract
    key = f"model.version_from = {c.version_from!r}"
    try:
        reported = client.version(lambda label: dep.runtime.image_label(image, label))
    except BluegreenError as exc:
        d.checks.append(Check("version", "FAIL", exc.message, key))
        return
    record = dep.state.environment(d.color)
    if c.version_from == "none":
        d.checks.append(Check("version", "skip", "not checked (the contract reads no version)", key))
    elif reported is None:
        d.checks.append(Check("version", "FAIL", f"the image has no label {c.version_label}", key))
    elif record is not None and reported != record.version:
        d.checks.append(Check("version", "FAIL", f"reports {reported!r}, deployed as {record.version!r}", key))
    else:
        d.checks.append(Check("version", "ok", f"reports {reported!r}", key))


def _holdout(d: Diagnosis, dep: Deployment) -> quality.Holdout | None:
    try:
        holdout = dep.holdout
    except BluegreenError as exc:
        d.checks.append(Check("holdout", "FAIL", exc.message, "analysis.holdout"))
        return None
    if holdout is None:
        d.checks.append(Check("predict", "skip", "no holdout to send rows from; set analysis.holdout",
                              "analysis.holdout"))
    return holdout


def _predict(d: Diagnosis, client: ModelClient, holdout: quality.Holdout, task: str) -> None:
    c = client.contract
    try:
        values, probabilities = client.predict(holdout.x[:2], holdout.columns, probe="doctor")
    except BluegreenError as exc:
        d.checks.append(Check("predict", "FAIL", exc.message, "model.predict_path, model.request, model.predictions"))
        return
    d.checks.append(Check("predict", "ok", f"POST {c.path(c.predict_path)} with 2 rows answered {values}",
                          "model.predict_path, model.request, model.predictions, model.prediction"))
    if c.probabilities:
        d.checks.append(Check("probabilities", "ok", f"class probabilities read ({len(probabilities or [])} rows)",
                              "model.probabilities"))
    predicted, probs = client.predict(holdout.x, holdout.columns, probe="doctor")
    figures = quality.metrics(task, predicted, holdout.y, probs)
    text = ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
    d.checks.append(Check("quality", "ok", f"on {holdout.source} ({len(holdout.y)} rows): {text}", "analysis.task"))


def _metrics(d: Diagnosis, dep: Deployment, color: str) -> None:
    import httpx

    from bluegreen.orchestrator.analysis import drift
    from bluegreen.orchestrator.analysis.steps import parse_buckets

    c = dep.contract
    url = dep.metrics_url(color)
    if url is None:
        d.checks.append(Check("metrics", "skip", "the contract names no metrics: each step's p95 comes from the "
                              "proxy's timing of each request, drift is not measured", "model.metrics_path"))
        return
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError as exc:
        d.checks.append(Check("metrics", "FAIL", f"GET {url} failed: {type(exc).__name__}",
                              "model.metrics_path, model.metrics_port"))
        return
    if not c.latency_histogram:
        d.checks.append(Check("latency", "skip", "the contract names no latency histogram: each step's p95 comes "
                              "from the proxy's timing of each request", "model.latency_histogram"))
    else:
        found = bool(parse_buckets(text, c.latency_histogram))
        d.checks.append(Check("latency", "ok" if found else "FAIL",
                              f"{c.latency_histogram} {'found' if found else 'not found'} at {url}",
                              "model.latency_histogram"))
    bins = drift.distribution(text)
    d.checks.append(Check("drift", "ok" if bins else "skip",
                          f"prediction distribution over {len(bins)} bins" if bins else
                          "no prediction distribution in the metrics: drift is not measured"))


def _replay_source(d: Diagnosis, dep: Deployment, holdout: quality.Holdout | None) -> None:
    s = dep.settings
    width = len(holdout.columns) if holdout is not None else None
    r = s.analysis.replay
    if r.file:
        from pathlib import Path

        path = Path(r.file) if Path(r.file).is_absolute() else s.root / r.file
        try:
            rows = replay.file_rows(path, r.requests, width)
        except BluegreenError as exc:
            d.checks.append(Check("replay", "FAIL", exc.message, "analysis.replay.file"))
            return
        where = str(path)
    else:
        rows = replay.recorded_rows(s.database.url, s.sqlite_path, r.requests, width)
        where = "the application database"
    d.checks.append(Check("replay", "ok" if rows else "skip",
                          f"{len(rows)} recorded requests in {where}" + ("" if rows else ": the replay is skipped"),
                          "analysis.replay"))


def render(d: Diagnosis) -> list[str]:
    lines = [f"{d.color} at {d.url}, profile {d.profile}"]
    for c in d.checks:
        key = f"   [{c.key}]" if c.key and c.outcome == "FAIL" else ""
        lines.append(f"  {c.outcome:<4} {c.name:<13} {c.detail}{key}")
    return lines


def as_json(d: Diagnosis) -> str:
    return json.dumps(d.to_dict(), indent=2)
