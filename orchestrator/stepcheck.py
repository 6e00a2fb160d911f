"""Judging one traffic step: readings before and after the bake, and every check on their difference.

A reading takes the proxy's counters for the candidate and both colours' Prometheus metrics
(the contract says where they are). Judging the difference gives, as settings say:
the proxy verdict (error rate and p95, analysis.py), the Prometheus verdict (sources/prometheus.py),
and drift (drift.py). Each is recorded in the step's journal detail, whichever failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bluegreen.orchestrator import analysis, drift
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import ProxyError, ReleaseFailed


@dataclass(frozen=True)
class Reading:
    proxy: analysis.Snapshot
    candidate: dict[str, float]  # prediction distribution (drift)
    live: dict[str, float]


@dataclass
class StepResult:
    reasons: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons


class StepCheck:
    def __init__(self, dep: Deployment, candidate: str, live: str) -> None:
        self.dep = dep
        self.candidate = candidate
        self.live = live

    def _metrics(self, color: str) -> str:
        import httpx

        url = self.dep.metrics_url(color)
        if url is None:
            return ""
        try:
            return httpx.get(url, timeout=5).text
        except httpx.HTTPError as exc:
            raise ReleaseFailed(f"{color}'s metrics at {url} do not answer: {type(exc).__name__}") from None

    def read(self) -> Reading:
        stats = self.dep.proxy.stats().get(self.candidate)
        if stats is None:
            raise ProxyError(f"the proxy reports no statistics for {self.candidate}")
        cand_text, live_text = self._metrics(self.candidate), self._metrics(self.live)
        snap = analysis.snapshot(stats, cand_text, self.dep.contract.latency_histogram)
        return Reading(snap, drift.distribution(cand_text), drift.distribution(live_text))

    def judge(self, before: Reading, after: Reading, bake_seconds: float) -> StepResult:
        a = self.dep.settings.analysis
        result = StepResult()
        if a.source in ("proxy", "both"):
            verdict = analysis.judge(before.proxy, after.proxy, a.max_error_rate, a.max_p95_ms, a.min_requests)
            result.detail["analysis"] = verdict.to_dict()
            result.reasons += verdict.reasons
            result.lines.append(verdict.summary())
        if a.source in ("prometheus", "both"):
            from bluegreen.orchestrator.sources import prometheus

            p = a.prometheus
            prom = prometheus.evaluate(p.url, p.queries, self.candidate, bake_seconds,
                                       self.dep.settings.environments.color(self.candidate).port, p.timeout)
            result.detail["prometheus"] = prom.to_dict()
            result.reasons += prom.reasons
            result.lines.append(prom.summary())
        d = a.drift
        report = drift.judge(drift.delta(before.candidate, after.candidate), drift.delta(before.live, after.live),
                             d.warn, d.fail, d.min_predictions)
        result.detail["drift"] = report.to_dict()
        result.lines.append(report.summary())
        if report.failed:
            result.reasons.append(f"prediction drift: PSI {report.psi:.3f} against the live colour is above "
                                  f"analysis.drift.fail = {d.fail:g}")
        return result
