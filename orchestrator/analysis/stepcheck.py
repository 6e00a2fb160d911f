"""Judging one traffic step: readings before and after the bake, and every check on their difference.

A reading takes the proxy's counters and its timings of the candidate's requests, and both
colours' Prometheus metrics (the contract says where they are). Judging the difference gives, as
settings say: the proxy verdict (error rate and p95, analysis.py), the Prometheus verdict
(sources/prometheus.py), and drift (drift.py). Each is recorded in the step's journal detail, whichever failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bluegreen.orchestrator.analysis import drift
from bluegreen.orchestrator.analysis import steps as analysis
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


class _ReplicaCounters:
    """Counters per replica, each kept monotonic across restarts, and their sum."""

    def __init__(self) -> None:
        self._raw: dict[tuple[str, str], dict[Any, float]] = {}
        self._offset: dict[tuple[str, str], dict[Any, float]] = {}
        self._adjusted: dict[tuple[str, str], dict[Any, float]] = {}

    def update(self, replica: str, kind: str, values: dict[Any, float]) -> None:
        key = (replica, kind)
        raw, offset = self._raw.get(key, {}), self._offset.setdefault(key, {})
        if any(values.get(k, 0.0) < v for k, v in raw.items()):  # the replica restarted: its counters reset
            for k, v in raw.items():
                offset[k] = offset.get(k, 0.0) + v
        self._raw[key] = dict(values)
        self._adjusted[key] = {k: values.get(k, 0.0) + offset.get(k, 0.0) for k in set(values) | set(offset)}

    def total(self, kind: str) -> dict[Any, float]:
        out: dict[Any, float] = {}
        for (_replica, k), values in self._adjusted.items():
            if k == kind:
                for name, v in values.items():
                    out[name] = out.get(name, 0.0) + v
        return out


class StepCheck:
    def __init__(self, dep: Deployment, candidate: str, live: str) -> None:
        self.dep = dep
        self.candidate = candidate
        self.live = live
        self.last_sample: dict[str, Any] = {}  # the figures of the latest watch(), for the typed events
        self._replicas: dict[str, _ReplicaCounters] = {}

    def _counters(self, color: str) -> tuple[tuple[tuple[float, float], ...], dict[str, float]]:
        """The colour's latency histogram and prediction counts, summed over its replicas.

        Each replica's counters are made monotonic across its restarts (Prometheus' counter-reset
        rule), and a replica that does not answer now counts with what it last reported: a task
        that dies and is replaced neither fails the step nor makes the counters go backwards.
        Only when no replica answers is the step failed.
        """
        import httpx

        urls = self.dep.metrics_urls(color)
        if not urls:
            return (), {}
        counters = self._replicas.setdefault(color, _ReplicaCounters())
        histogram = self.dep.contract.latency_histogram
        answered, failure = 0, ""
        for url in urls:
            try:
                text = httpx.get(url, timeout=5).text
            except httpx.HTTPError as exc:
                failure = failure or f"{url} do not answer: {type(exc).__name__}"
                continue
            answered += 1
            counters.update(url, "latency", {le: n for le, n in analysis.parse_buckets(text, histogram)}
                            if histogram else {})
            counters.update(url, "predictions", drift.distribution(text))
        if not answered:
            raise ReleaseFailed(f"{color}'s metrics at {failure}")
        return tuple(sorted(counters.total("latency").items())), counters.total("predictions")

    def read(self) -> Reading:
        stats = self.dep.proxy.stats().get(self.candidate)
        if stats is None:
            raise ProxyError(f"the proxy reports no statistics for {self.candidate}")
        cand_buckets, cand_predictions = self._counters(self.candidate)
        _live_buckets, live_predictions = self._counters(self.live)
        snap = replace(analysis.snapshot(stats, "", self.dep.contract.latency_histogram), buckets=cand_buckets,
                       proxy_buckets=self._proxy_latency())
        return Reading(snap, cand_predictions, live_predictions)

    def _proxy_latency(self) -> tuple[tuple[float, float], ...]:
        """The proxy's histogram of the candidate's requests (its replicas summed)."""
        return self.dep.proxy.latency().get(self.candidate, ())

    def watch(self, before: Reading) -> list[str]:
        """Reasons to fail now, from the candidate's counters so far (read every sample interval)."""
        a = self.dep.settings.analysis
        stats = self.dep.proxy.stats().get(self.candidate)
        if stats is None:
            return []
        buckets = self._counters(self.candidate)[0] if self.dep.contract.latency_histogram else ()
        now = replace(analysis.snapshot(stats, "", self.dep.contract.latency_histogram), buckets=buckets,
                      proxy_buckets=self._proxy_latency())
        forgiven = analysis.lost_replicas(before.proxy, now).forgiven  # a dead task's redispatched attempts
        requests = max(0, now.responses - before.proxy.responses - forgiven)
        errors = max(0, now.errors - before.proxy.errors - forgiven)
        lat = analysis.latency(before.proxy, now)
        self.last_sample = {"color": self.candidate, "requests": requests, "errors": errors,
                            "error_rate": round(errors / requests, 4) if requests else 0.0,
                            "p95_ms": None if lat.p95_ms is None else round(lat.p95_ms, 1),
                            "p95_source": lat.source, "p95_timed": lat.timed}
        return analysis.conclusive_failure(before.proxy, now, a.max_error_rate, a.max_p95_ms, a.confidence,
                                           max(a.min_requests, 10))

    def user_requests(self, before: Reading, after: Reading) -> int:
        forgiven = analysis.lost_replicas(before.proxy, after.proxy).forgiven
        return max(0, after.proxy.responses - before.proxy.responses - forgiven)

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
            from bluegreen.orchestrator.analysis.sources import prometheus

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
