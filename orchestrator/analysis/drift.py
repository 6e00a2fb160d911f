"""Drift: the candidate's predictions against the live colour's over the same bake window.

Both colours expose what they predicted (the reference server: ``predictions_total{class=…}``
for a classifier, the ``prediction_value`` histogram for a regressor, both user traffic only).
Their increase over the bake gives two distributions over the same bins, compared with the
population stability index: PSI = sum over bins of (c - l) * ln(c / l), c and l the bins' shares. By the usual
reading, under 0.1 is stable, 0.1 to 0.25 a shift worth a look, over 0.25 a different population.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

CLASS_LINE = re.compile(r'^predictions_total\{class="([^"]*)"\}\s+(\S+)$', re.MULTILINE)
VALUE_BUCKET = re.compile(r'^prediction_value_bucket\{le="([^"]+)"\}\s+(\S+)$', re.MULTILINE)
EPSILON = 1e-4  # share given to an empty bin, so one empty bin does not make the index infinite


def distribution(metrics_text: str) -> dict[str, float]:
    """Counts per bin (class, or value bucket) from a server's metrics; empty when it exposes none."""
    classes = {label: float(n) for label, n in CLASS_LINE.findall(metrics_text)}
    if classes:
        return classes
    cumulative = sorted(((math.inf if le == "+Inf" else float(le)), float(n))
                        for le, n in VALUE_BUCKET.findall(metrics_text))
    out, below = {}, 0.0
    for bound, n in cumulative:
        out[f"le {bound:g}"] = n - below
        below = n
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: max(0.0, v - before.get(k, 0.0)) for k, v in after.items()}


def psi(candidate: dict[str, float], live: dict[str, float]) -> float:
    bins = sorted(set(candidate) | set(live))
    c_total, l_total = sum(candidate.values()), sum(live.values())
    index = 0.0
    for b in bins:
        c = max(EPSILON, candidate.get(b, 0.0) / c_total)
        v = max(EPSILON, live.get(b, 0.0) / l_total)
        index += (c - v) * math.log(c / v)
    return index


@dataclass
class DriftReport:
    psi: float | None
    candidate_predictions: int
    live_predictions: int
    warn: float
    fail: float
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.psi is not None and self.psi > self.fail

    @property
    def warning(self) -> bool:
        return self.psi is not None and self.warn < self.psi <= self.fail

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.psi is None:
            return f"drift not measured ({self.note})"
        level = "FAIL" if self.failed else "warning" if self.warning else "stable"
        return (f"drift PSI {self.psi:.3f} ({level}; {self.candidate_predictions} vs {self.live_predictions} "
                "predictions)")


def judge(candidate: dict[str, float], live: dict[str, float], warn: float, fail: float,
          min_predictions: int) -> DriftReport:
    c_n, l_n = int(sum(candidate.values())), int(sum(live.values()))
    if not candidate and not live:
        return DriftReport(None, 0, 0, warn, fail, "the servers expose no prediction distribution")
    if c_n < min_predictions or l_n < min_predictions:
        return DriftReport(None, c_n, l_n, warn, fail,
                           f"too few predictions: {c_n} and {l_n}, fewer than analysis.drift.min_predictions "
                           f"= {min_predictions}")
    return DriftReport(round(psi(candidate, live), 4), c_n, l_n, warn, fail)
