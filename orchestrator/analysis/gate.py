"""The checks before a candidate gets any traffic: ready, right version, answering, as good as live.

- ``health``: the version the server reports (by the contract: endpoint, image label, or not
  checked) and a few real prediction calls.
- ``quality``: the task's metrics on a labelled holdout, candidate against live, each with its
  threshold (quality.py). Only the reference profile has a bundled holdout; with another
  profile and none configured the check is skipped, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bluegreen.orchestrator.errors import ContractError, ReleaseFailed
from bluegreen.orchestrator.model import quality
from bluegreen.orchestrator.model.client import ModelClient, clip
from bluegreen.orchestrator.model.quality import Holdout, QualityReport, TaskChoice


def health(client: ModelClient, version: str, checks: int, raw_body: str, sample: Holdout | None,
           image_label: Callable[[str], str | None]) -> dict[str, Any]:
    """The version the candidate reports, then ``checks`` prediction calls that must succeed."""
    c = client.contract
    reported = client.version(image_label)
    if reported is not None and reported != version:
        source = (f"image label {c.version_label}" if c.version_from == "label"
                  else f"GET {c.path(c.version_path)} at {c.version_pointer}")
        raise ReleaseFailed(f"the candidate reports version {reported!r}, not {version!r} ({source})",
                            "check the image tag, --version, or [model] version_from   (runbooks/model-contract.md)")
    if c.version_from == "label" and reported is None:
        raise ReleaseFailed(f"the image has no label {c.version_label} to read the version from",
                            "label the image, or set model.version_from = \"none\"   (runbooks/model-contract.md)")
    for i in range(checks):
        if raw_body:
            status, answer = client.call("POST", c.path(c.predict_path), raw_body.encode(), probe="gate")
            if status != 200:
                raise ContractError(f"health gate: prediction call {i + 1} of {checks} answered {status}: "
                                    f"{clip(answer)}\n  sent: {clip(raw_body)}   (release.predict_body)")
        elif sample is not None:
            client.predict(sample.x[i % len(sample.x): i % len(sample.x) + 1], sample.columns, probe="gate")
    return {"version": reported if reported is not None else "not checked", "predict_checks": checks}


def answers(client: ModelClient, holdout: Holdout) -> tuple[list[Any], list[list[float]] | None]:
    """The model's predictions (and class probabilities, when it gives them) for every holdout row."""
    return client.predict(holdout.x, holdout.columns, probe="quality")


def score(client: ModelClient, holdout: Holdout, task: str) -> dict[str, float]:
    predicted, probabilities = answers(client, holdout)
    return quality.metrics(task, predicted, holdout.y, probabilities)


def compare_on_holdout(candidate: ModelClient, live: ModelClient, holdout: Holdout, analysis: Any,
                       task: TaskChoice) -> QualityReport:
    """Both models on the same holdout; the report says which metrics got worse beyond their limits, and
    why no metric could decide when none can (the report is then inconclusive, which fails)."""
    began = time.monotonic()
    (cand_pred, cand_prob), (live_pred, live_prob) = answers(candidate, holdout), answers(live, holdout)
    cand = quality.metrics(task.task, cand_pred, holdout.y, cand_prob)
    base = quality.metrics(task.task, live_pred, holdout.y, live_prob)
    report = quality.compare(task.task, cand, base, analysis.max_quality_drop, dict(analysis.thresholds),
                             holdout.source, len(holdout.y), analysis.primary)
    report.task_reason = task.reason
    report.inconclusive = quality.inconclusive(report, holdout.y, cand_pred)
    report.seconds = round(time.monotonic() - began, 3)
    return report
