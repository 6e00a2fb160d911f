"""The step analysis from the proxy's side: error rate and latency of the candidate over a bake.

The candidate's error rate comes from the proxy's own per-server counters, both as deltas over
the bake. Its p95 latency comes from one of two histograms, and every figure says which:

- ``server histogram``: the latency histogram in the server's Prometheus metrics (the contract
  names the family). Judged whenever it observed the window's requests: it is the figure the
  team chose and sees on its own dashboards, and it holds no proxy or network time.
- ``proxy``: the proxy's own timing of each request it forwarded to the colour (proxy/timings.py).
  Judged when the server exposes no histogram (MLflow, MLServer and custom servers unless one is
  configured), so no step passes on its error rate alone; shown beside the server's figure
  otherwise, where a difference between the two is time the server's own timer does not see
  (a request waiting for a busy event loop, say).

The gate before traffic is gate.py; quality, replay and drift have their own modules, and
Prometheus queries are sources/prometheus.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.proxy import ServerStats

SERVER_HISTOGRAM = "server histogram"
PROXY = "proxy"


@dataclass(frozen=True)
class Snapshot:
    """Counters at one moment: the proxy's view of a colour and the colour's latency histograms."""

    responses: int
    errors: int  # 5xx answers plus connection and response errors seen by the proxy
    buckets: tuple[tuple[float, float], ...]  # the server's histogram: (upper bound, cumulative count)
    # A replicated colour: per replica, (times the proxy took it out, attempts it failed).
    replicas: tuple[tuple[int, int], ...] = ()
    proxy_buckets: tuple[tuple[float, float], ...] = ()  # the proxy's timings of the colour's requests


@dataclass(frozen=True)
class Latency:
    """A window's p95: the figure judged, where it came from, and every source's own figure."""

    p95_ms: float | None
    source: str  # SERVER_HISTOGRAM, PROXY, or "" when neither timed a request
    timed: int  # the requests the judged figure rests on
    by_source: dict[str, float]  # each source that timed requests in the window: its p95 in ms

    def describe(self) -> str:
        """``12ms (server histogram), proxy 13ms``, ``737ms (proxy)`` or ``n/a``."""
        if self.p95_ms is None:
            return "n/a"
        others = "".join(f", {name} {ms:.0f}ms" for name, ms in self.by_source.items() if name != self.source)
        return f"{self.p95_ms:.0f}ms ({self.source}){others}"


def observed(before: tuple[tuple[float, float], ...], after: tuple[tuple[float, float], ...]) -> int:
    """How many observations a histogram gained between two readings."""
    if not after:
        return 0
    return max(0, round(after[-1][1] - dict(before).get(after[-1][0], 0.0)))


def latency(before: Snapshot, after: Snapshot) -> Latency:
    """The window's p95: from the server's histogram when it timed requests, else the proxy's."""
    figures: dict[str, tuple[float, int]] = {}
    for name, old, new in ((SERVER_HISTOGRAM, before.buckets, after.buckets),
                           (PROXY, before.proxy_buckets, after.proxy_buckets)):
        p95 = quantile(0.95, old, new)
        if p95 is not None:
            figures[name] = (p95 * 1000, observed(old, new))
    if not figures:
        return Latency(None, "", 0, {})
    source = next(iter(figures))  # the server's first, when it has one
    return Latency(figures[source][0], source, figures[source][1], {k: v[0] for k, v in figures.items()})


@dataclass
class Verdict:
    ok: bool
    requests: int
    error_rate: float
    p95_ms: float | None
    reasons: list[str] = field(default_factory=list)
    replicas_replaced: int = 0  # replicas that died once and were taken out, their failed attempts not counted
    attempts_forgiven: int = 0
    p95_source: str = ""  # SERVER_HISTOGRAM or PROXY: where the judged p95 came from ("" = nowhere)
    p95_timed: int = 0  # the requests it rests on
    p95_by_source: dict[str, float] = field(default_factory=dict)  # every source's p95 in ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        p95 = Latency(self.p95_ms, self.p95_source, self.p95_timed, self.p95_by_source).describe()
        line = f"{self.requests} requests, errors {self.error_rate:.1%}, p95 {p95}"
        if self.replicas_replaced:
            line += (f"; {self.replicas_replaced} replica(s) died and were taken out, their "
                     f"{self.attempts_forgiven} failed attempts sent to others and not counted")
        return line


SELECTOR = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_buckets(metrics_text: str, histogram: str = "predict_latency_seconds") -> tuple[tuple[float, float], ...]:
    """A histogram's cumulative buckets from Prometheus text, summed over the series it selects.

    ``histogram`` is a family name, optionally with label matchers as in PromQL:
    ``rest_server_request_duration_seconds{path="/v2/models/{model_name}/infer"}``.
    """
    selector = SELECTOR.match(histogram.strip())
    if not histogram or selector is None:
        return ()
    name, wanted = selector.group(1), dict(LABEL.findall(selector.group(2) or ""))
    # Label values may hold braces (MLServer's path="/v2/models/{model_name}/infer"): match quoted strings whole.
    line = re.compile(rf'^{re.escape(name)}_bucket\{{((?:[^}}"]|"(?:[^"\\]|\\.)*")*)\}}\s+(\S+)$', re.MULTILINE)
    sums: dict[float, float] = {}
    for labels_text, count in line.findall(metrics_text):
        labels = dict(LABEL.findall(labels_text))
        if "le" not in labels or any(labels.get(k) != v for k, v in wanted.items()):
            continue
        bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
        sums[bound] = sums.get(bound, 0.0) + float(count)
    return tuple(sorted(sums.items()))


def snapshot(stats: ServerStats, metrics_text: str, histogram: str = "predict_latency_seconds") -> Snapshot:
    """Every attempt the proxy made on the colour counts, including those it retried elsewhere."""
    return Snapshot(responses=stats.responses_total + stats.errors + stats.retries,
                    errors=stats.responses_5xx + stats.errors + stats.retries,
                    buckets=parse_buckets(metrics_text, histogram),
                    replicas=tuple((r.down_transitions, r.failed_attempts) for r in stats.replicas))


@dataclass(frozen=True)
class ReplicaLoss:
    taken_out: int = 0  # replicas the proxy took out once in the window
    forgiven: int = 0  # the attempts they failed, sent again elsewhere and not counted
    reasons: tuple[str, ...] = ()


def lost_replicas(before: Snapshot, after: Snapshot) -> ReplicaLoss:
    """Attempts to forgive a replicated colour, and reasons to fail it, from its replicas' deaths.

    A replica that died once (a task killed or its node lost) is taken out by the proxy on its
    first failed connection and its requests are sent again elsewhere: the user sees nothing, and
    the orchestrator replaces it. Those attempts are not the model's errors. A replica that went
    down twice in one window is a task that keeps failing, and a colour whose every replica went
    down was lost as a whole: neither is forgiven. 5xx answers are never forgiven.
    """
    if len(after.replicas) < 2 or len(before.replicas) != len(after.replicas):
        return ReplicaLoss()
    deltas = [(downs - b_downs, failed - b_failed)
              for (b_downs, b_failed), (downs, failed) in zip(before.replicas, after.replicas, strict=True)]
    reasons = tuple(f"replica {i} was taken out {downs} times: its tasks keep failing"
                    for i, (downs, _failed) in enumerate(deltas, start=1) if downs >= 2)
    if reasons or all(downs > 0 for downs, _failed in deltas):
        return ReplicaLoss(reasons=reasons)
    return ReplicaLoss(taken_out=sum(1 for downs, _ in deltas if downs > 0),
                       forgiven=sum(max(0, failed) for downs, failed in deltas if downs > 0))


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
    loss = lost_replicas(before, after)
    requests = max(0, after.responses - before.responses - loss.forgiven)
    errors = max(0, after.errors - before.errors - loss.forgiven)
    reasons = list(loss.reasons)
    error_rate = errors / requests if requests else 0.0
    lat = latency(before, after)
    if requests < min_requests:
        reasons.append(f"only {requests} requests reached it during the bake (analysis.min_requests = {min_requests})")
    if error_rate > max_error_rate:
        reasons.append(f"error rate {error_rate:.1%} ({errors} of {requests}) is above {max_error_rate:.1%}")
    if lat.p95_ms is not None and lat.p95_ms > max_p95_ms:
        reasons.append(f"p95 latency {lat.p95_ms:.0f}ms ({lat.source}) is above {max_p95_ms:.0f}ms")
    return Verdict(ok=not reasons, requests=requests, error_rate=error_rate, p95_ms=lat.p95_ms, reasons=reasons,
                   replicas_replaced=loss.taken_out, attempts_forgiven=loss.forgiven, p95_source=lat.source,
                   p95_timed=lat.timed, p95_by_source=lat.by_source)


def wilson_lower(errors: int, n: int, z: float) -> float:
    """The lower end of the Wilson score interval for an error rate of ``errors`` in ``n``."""
    if n == 0:
        return 0.0
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def conclusive_failure(before: Snapshot, now: Snapshot, max_error_rate: float, max_p95_ms: float,
                       confidence: float, min_evidence: int) -> list[str]:
    """Reasons to fail a step before its bake ends; empty while the evidence is not conclusive.

    An error rate fails early only when even the lower end of its confidence interval is above the
    limit, so a healthy candidate is not failed by one unlucky request; latency only once enough
    requests were observed for a p95 to mean something.
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(confidence)  # one-sided: is the rate above the limit?
    loss = lost_replicas(before, now)
    requests = max(0, now.responses - before.responses - loss.forgiven)
    errors = max(0, now.errors - before.errors - loss.forgiven)
    reasons = list(loss.reasons)
    if requests >= min_evidence and errors and wilson_lower(errors, requests, z) > max_error_rate:
        reasons.append(f"error rate {errors / requests:.1%} ({errors} of {requests}) is above {max_error_rate:.1%} "
                       f"at {confidence:.0%} confidence (the lower bound is {wilson_lower(errors, requests, z):.1%})")
    lat = latency(before, now)
    if lat.p95_ms is not None and lat.timed >= max(min_evidence, 50) and lat.p95_ms > max_p95_ms:
        reasons.append(f"p95 latency {lat.p95_ms:.0f}ms ({lat.source}) is above {max_p95_ms:.0f}ms "
                       f"({lat.timed} requests)")
    return reasons
