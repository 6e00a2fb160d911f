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
from pathlib import Path
from typing import Any

from bluegreen.orchestrator import quality
from bluegreen.orchestrator.errors import ContractError, ReleaseFailed
from bluegreen.orchestrator.modelclient import ModelClient, clip
from bluegreen.orchestrator.quality import Holdout, HoldoutError, QualityReport


def holdout_for(settings: Any, profile: str) -> Holdout | None:
    """The labelled holdout the quality checks use; None when there is none for this contract."""
    a = settings.analysis
    if not a.holdout and profile != "reference":
        return None
    try:
        return quality.load_holdout(a.holdout, a.task, a.label_column, Path(settings.root))
    except HoldoutError as exc:
        raise ReleaseFailed(str(exc), "set analysis.holdout to a JSON or CSV file with labels   "
                                      "(runbooks/model-contract.md)") from None


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


def score(client: ModelClient, holdout: Holdout, task: str) -> dict[str, float]:
    predicted, probabilities = client.predict(holdout.x, holdout.columns, probe="quality")
    return quality.metrics(task, predicted, holdout.y, probabilities)


def compare_on_holdout(candidate: ModelClient, live: ModelClient, holdout: Holdout, analysis: Any
                       ) -> QualityReport:
    """Both models on the same holdout; the report says which metrics got worse beyond their limits."""
    began = time.monotonic()
    cand, base = score(candidate, holdout, analysis.task), score(live, holdout, analysis.task)
    report = quality.compare(analysis.task, cand, base, analysis.max_quality_drop, dict(analysis.thresholds),
                             holdout.source, len(holdout.y), analysis.primary)
    report.seconds = round(time.monotonic() - began, 3)
    return report
