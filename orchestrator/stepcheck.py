"""Judging one traffic step: readings before and after the bake, and every check on their difference.

A reading takes the proxy's counters for the candidate and both colours' Prometheus metrics
(the contract says where they are). Judging the difference gives, as settings say:
the proxy verdict (error rate and p95, analysis.py), the Prometheus verdict (sources/prometheus.py),
and drift (drift.py). Each is recorded in the step's journal detail, whichever failed.
"""

from __future__ import annotations

from collections.abc import Callable
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
        self.last_sample: dict[str, Any] = {}  # the figures of the latest watch(), for the typed events

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

    def watch(self, before: Reading) -> list[str]:
        """Reasons to fail now, from the candidate's counters so far (read every sample interval)."""
        a = self.dep.settings.analysis
        stats = self.dep.proxy.stats().get(self.candidate)
        if stats is None:
            return []
        text = self._metrics(self.candidate) if self.dep.contract.latency_histogram else ""
        now = analysis.snapshot(stats, text, self.dep.contract.latency_histogram)
        requests = max(0, now.responses - before.proxy.responses)
        errors = max(0, now.errors - before.proxy.errors)
        p95 = analysis.quantile(0.95, before.proxy.buckets, now.buckets)
        self.last_sample = {"color": self.candidate, "requests": requests, "errors": errors,
                            "error_rate": round(errors / requests, 4) if requests else 0.0,
                            "p95_ms": None if p95 is None else round(p95 * 1000, 1)}
        return analysis.conclusive_failure(before.proxy, now, a.max_error_rate, a.max_p95_ms, a.confidence,
                                           max(a.min_requests, 10))

    def user_requests(self, before: Reading, after: Reading) -> int:
        return max(0, after.proxy.responses - before.proxy.responses)

    def judge(self, before: Reading, after: Reading, bake_seconds: float,
              probe: Callable[[int], tuple[int, int]] | None = None) -> StepResult:
        """Every check on the bake's window; ``probe(n)`` sends n probe requests: (sent, failed)."""
        a = self.dep.settings.analysis
        result = StepResult()
        users = self.user_requests(before, after)
        missing = max(0, a.min_requests - users)
        if missing and a.no_traffic == "probe" and probe is not None:
            sent, failed = probe(missing)
            result.detail["probe"] = {"requests": sent, "failed": failed}
            result.lines.append(f"{users} user requests, so {sent} probes ({failed} failed)")
            if sent and failed / sent > a.max_error_rate:
                result.reasons.append(f"probe requests: {failed} of {sent} failed (above {a.max_error_rate:.1%})")
            missing = max(0, missing - sent)
        if a.source in ("proxy", "both"):
            verdict = analysis.judge(before.proxy, after.proxy, a.max_error_rate, a.max_p95_ms,
                                     users + missing if missing else 0)
            result.detail["analysis"] = verdict.to_dict()
            result.reasons += verdict.reasons
            result.lines.append(verdict.summary())
        elif missing:
            result.reasons.append(f"only {users} requests reached it during the bake (analysis.min_requests = "
                                  f"{a.min_requests})")
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
