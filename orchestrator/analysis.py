"""Checks that decide whether a candidate may take (more) traffic.

- The health gate, before any traffic: ``/version`` reports the version being released and a
  few real ``/predict`` calls succeed.
- The step analysis, after each bake: the candidate's error rate from the proxy's own
  per-server counters, its p95 latency from its ``/metrics`` histogram, both as deltas over
  the bake.
- The quality gate: the candidate's accuracy on a labelled holdout, called through its own
  ``/predict``, against the live model's; more than ``max_quality_drop`` worse fails.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.errors import ReleaseFailed
from bluegreen.orchestrator.proxy import ServerStats

BUCKET = re.compile(r'^predict_latency_seconds_bucket\{le="([^"]+)"\}\s+(\S+)$', re.MULTILINE)


@dataclass(frozen=True)
class Snapshot:
    """Counters at one moment: the proxy's view of a colour and the colour's latency histogram."""

    responses: int
    errors: int  # 5xx answers plus connection and response errors seen by the proxy
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


@dataclass
class Verdict:
    ok: bool
    requests: int
    error_rate: float
    p95_ms: float | None
    reasons: list[str] = field(default_factory=list)
    quality: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        p95 = "n/a" if self.p95_ms is None else f"{self.p95_ms:.0f}ms"
        text = f"{self.requests} requests, errors {self.error_rate:.1%}, p95 {p95}"
        if self.quality:
            text += f", accuracy {self.quality['candidate']:.3f} vs {self.quality['live']:.3f}"
        return text


def parse_buckets(metrics_text: str) -> tuple[tuple[float, float], ...]:
    out = []
    for le, count in BUCKET.findall(metrics_text):
        out.append((math.inf if le == "+Inf" else float(le), float(count)))
    return tuple(sorted(out))


def snapshot(stats: ServerStats, metrics_text: str) -> Snapshot:
    return Snapshot(responses=stats.responses_total + stats.errors, errors=stats.responses_5xx + stats.errors,
                    buckets=parse_buckets(metrics_text))


def quantile(q: float, before: tuple[tuple[float, float], ...], after: tuple[tuple[float, float], ...]
             ) -> float | None:
    """The q-quantile in seconds of the observations between two histogram readings.

    Linear interpolation inside the bucket, as Prometheus' histogram_quantile does; None when
    nothing was observed.
    """
    earlier = dict(before)
    delta = [(le, count - earlier.get(le, 0.0)) for le, count in after]
    if not delta or delta[-1][1] <= 0:
        return None
    rank = q * delta[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in delta:
        if count >= rank:
            if math.isinf(le):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return None


def judge(before: Snapshot, after: Snapshot, max_error_rate: float, max_p95_ms: float,
          min_requests: int) -> Verdict:
    requests = max(0, after.responses - before.responses)
    errors = max(0, after.errors - before.errors)
    error_rate = errors / requests if requests else 0.0
    p95 = quantile(0.95, before.buckets, after.buckets)
    p95_ms = None if p95 is None else p95 * 1000
    reasons = []
    if requests < min_requests:
        reasons.append(f"only {requests} requests reached it during the bake (analysis.min_requests = {min_requests})")
    if error_rate > max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} ({errors} of {requests}) is above {max_error_rate:.1%}")
    if p95_ms is not None and p95_ms > max_p95_ms:
        reasons.append(f"p95 latency {p95_ms:.0f}ms is above {max_p95_ms:.0f}ms")
    return Verdict(ok=not reasons, requests=requests, error_rate=error_rate, p95_ms=p95_ms, reasons=reasons)


@dataclass(frozen=True)
class Holdout:
    x: list[list[float]]
    y: list[int]


def load_holdout(path: str) -> Holdout:
    try:
        if path:
            doc = json.loads(Path(path).read_text())
        else:
            doc = json.loads(resources.files("bluegreen.orchestrator").joinpath("data/iris_holdout.json").read_text())
        return Holdout(x=[list(map(float, row)) for row in doc["x"]], y=[int(v) for v in doc["y"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseFailed(f"cannot read the holdout {path or '(bundled)'}: {exc}",
                            "set analysis.holdout to a JSON file {\"x\": [...], \"y\": [...]}") from None


def accuracy(base_url: str, holdout: Holdout, timeout: float = 10.0) -> float:
    """The share of holdout rows the model at base_url classifies right (one batch /predict)."""
    import httpx

    try:
        response = httpx.post(f"{base_url}/predict", json={"instances": holdout.x}, timeout=timeout)
        response.raise_for_status()
        predicted = [int(p["class_id"]) for p in response.json()["predictions"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseFailed(f"quality check against {base_url} failed: {type(exc).__name__}: {exc}") from None
    if len(predicted) != len(holdout.y):
        raise ReleaseFailed(f"{base_url} answered {len(predicted)} predictions for {len(holdout.y)} rows")
    return sum(p == y for p, y in zip(predicted, holdout.y, strict=True)) / len(holdout.y)


def compare_quality(candidate: float, live: float, max_drop: float) -> str | None:
    """A reason when the candidate is more than ``max_drop`` (relative) worse than live, else None."""
    if candidate < live * (1 - max_drop):
        return (f"model quality: accuracy {candidate:.3f} is more than {max_drop:.0%} below the live model's "
                f"{live:.3f}")
    return None


def health_gate(base_url: str, version: str, predict_checks: int, predict_body: str,
                timeout: float = 5.0) -> dict[str, Any]:
    """Before any traffic: /version reports ``version`` and ``predict_checks`` calls answer 200."""
    import httpx

    body = json.loads(predict_body)
    try:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            reported = client.get("/version").json().get("version")
            if reported != version:
                raise ReleaseFailed(f"the candidate reports version {reported!r}, not {version!r}",
                                    "check the image tag and --version   (runbooks/failed-release.md)")
            for i in range(predict_checks):
                response = client.post("/predict", json=body)
                if response.status_code != 200:
                    raise ReleaseFailed(f"health gate: /predict call {i + 1} of {predict_checks} answered "
                                        f"{response.status_code}: {response.text[:200]}")
    except httpx.HTTPError as exc:
        raise ReleaseFailed(f"health gate: the candidate stopped answering: {type(exc).__name__}: {exc}") from None
    except ValueError:
        raise ReleaseFailed("health gate: /version did not answer JSON") from None
    return {"version": reported, "predict_checks": predict_checks}
