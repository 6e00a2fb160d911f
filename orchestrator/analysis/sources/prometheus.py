"""Prometheus as a metric source: named PromQL queries, each with the bound a step may not pass.

At the end of each bake every query is evaluated (``/api/v1/query``, an instant query) with
``{colour}``, ``{window}`` and ``{port}`` filled in for the colour being judged. A query that
returns no series, or NaN, is inconclusive, and an inconclusive step is never a passed one.
bluegreen can also keep a file_sd target file (both colours, labelled ``colour``) for the
Prometheus that scrapes them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.errors import BluegreenError


@dataclass
class QueryResult:
    name: str
    query: str
    value: float | None
    max: float | None
    min: float | None
    problem: str = ""  # why it failed, or why it is inconclusive

    @property
    def conclusive(self) -> bool:
        return self.value is not None


@dataclass
class PrometheusVerdict:
    results: list[QueryResult] = field(default_factory=list)

    @property
    def conclusive(self) -> bool:
        return all(r.conclusive for r in self.results)

    @property
    def ok(self) -> bool:
        return self.conclusive and not any(r.problem for r in self.results)

    @property
    def reasons(self) -> list[str]:
        return [f"prometheus {r.name}: {r.problem}" for r in self.results if r.problem]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "conclusive": self.conclusive, "results": [asdict(r) for r in self.results]}

    def summary(self) -> str:
        parts = [f"{r.name} {'n/a' if r.value is None else f'{r.value:.4g}'}" for r in self.results]
        return "prometheus: " + ", ".join(parts)


def expand(query: str, colour: str, window_s: float, port: int) -> str:
    return (query.replace("{colour}", colour).replace("{color}", colour)
            .replace("{window}", f"{max(1, round(window_s))}s").replace("{port}", str(port)))


def evaluate(url: str, queries: dict[str, Any], colour: str, window_s: float, port: int,
             timeout: float = 5.0) -> PrometheusVerdict:
    import httpx

    verdict = PrometheusVerdict()
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for name, q in queries.items():
            expr = expand(q.query, colour, window_s, port)
            result = QueryResult(name, expr, None, q.max, q.min)
            try:
                response = client.get("/api/v1/query", params={"query": expr})
                doc = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise BluegreenError(f"Prometheus at {url} did not answer query {name}: {type(exc).__name__}: {exc}",
                                     "check analysis.prometheus.url   (runbooks/model-contract.md)") from None
            if doc.get("status") != "success":
                raise BluegreenError(f"Prometheus refused query {name} ({expr}): {doc.get('error', doc)}",
                                     "fix the query in [analysis.prometheus.queries]")
            series = doc.get("data", {}).get("result", [])
            value = float(series[0]["value"][1]) if series else math.nan
            if math.isnan(value):
                result.problem = "no data: the query returned no series (inconclusive, not passed)"
            else:
                result.value = value
                if q.max is not None and value > q.max:
                    result.problem = f"{value:.4g} is above {q.max:g}"
                elif q.min is not None and value < q.min:
                    result.problem = f"{value:.4g} is below {q.min:g}"
            verdict.results.append(result)
    return verdict


def write_targets(path: Path, project: str, targets: dict[str, tuple[str, str]]) -> None:
    """A file_sd target file: one entry per colour, ``{colour: (host:port, metrics path)}``."""
    doc = [{"targets": [address], "labels": {"colour": colour, "bluegreen_project": project,
                                              "__metrics_path__": metrics_path}}
           for colour, (address, metrics_path) in sorted(targets.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
