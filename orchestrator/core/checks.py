"""The team's own checks inside a release: run the ones a step names, keep each result in the step's
record, and wait for approvals through the requests other terminals send.

The checks themselves are analysis/checks.py. Here: which run where (the plan puts their names
in the gate, each traffic step and promotion), what they are told (the colours' URLs, the
versions), and what a result does. Each result goes into the step's detail in the journal as
soon as it is known (``checks``), so the history, ``bluegreen status`` and the dashboard show it
while the release goes on; a step waiting for approval says so in its detail
(``awaiting_approval``) until it has an answer. A failed check raises ``ReleaseFailed``, and a
rejected approval ``Rejected``: the release then ends like any failed step, traffic back first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bluegreen.orchestrator.analysis import checks
from bluegreen.orchestrator.analysis.checks import Answer, CheckResult, Targets
from bluegreen.orchestrator.core.events import Event, Progress
from bluegreen.orchestrator.core.plan import Plan, PlannedCheck, Step
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import ReleaseFailed
from bluegreen.orchestrator.state.journal import Journal


class Rejected(Exception):
    """An approval check answered no (``bluegreen abort`` while it waited)."""

    def __init__(self, check: str, who: str) -> None:
        super().__init__(f"approval {check} rejected by {who}")
        self.check = check
        self.who = who


def planned(settings: Any) -> list[PlannedCheck]:
    """The team's checks as the plan lists them (release.checks, in the order written)."""
    return [PlannedCheck(c.name, c.kind, tuple(c.when), float(c.timeout), checks.describe(c))
            for c in settings.release.checks]


def job_images(settings: Any, candidate: str) -> list[str]:
    """The images the job checks run (the candidate's where a check names none), each once."""
    images = [c.image or candidate for c in settings.release.checks if c.kind == "job"]
    return list(dict.fromkeys(images))


class StepChecks:
    """Runs the checks a step names, in order, stopping at the first that fails."""

    def __init__(self, dep: Deployment, plan: Plan, release_id: int, journal: Journal, progress: Progress,
                 answer: Answer, between: Callable[[], None]) -> None:
        self.dep = dep
        self.plan = plan
        self.rid = release_id
        self.journal = journal
        self.progress = progress
        self.answer = answer  # an approval's answer: ("approve" | "reject", who) or None
        self.between = between  # before each check: answers an abort or a promotion asked for meanwhile
        self.by_name = {c.name: c for c in dep.settings.release.checks}

    def run(self, step: Step, seq: int, detail: dict[str, Any], results: list[dict[str, Any]]) -> None:
        """Run ``step.checks``; each result is appended to ``results`` and journaled with ``detail``."""
        p = self.plan
        for name in step.checks:
            self.between()
            check = self.by_name[name]
            targets = Targets(self.dep.url(p.to_color), self.dep.url(p.from_color), p.version,
                              p.from_version or "", self.rid, step.name)
            if check.kind == "web":
                result = checks.web(check, targets)
            elif check.kind == "job":
                image = check.image or p.image
                self.progress(f"{step.name}: check {name}: running {image} "
                              f"{' '.join(check.command) or '(its own command)'} (up to {check.timeout:g}s)")
                result = checks.job(check, targets, self.dep.engine, image)
            else:
                result = self._approval(check, step, seq, detail, results)
            results.append(result.to_dict())
            self.journal.step_note(self.rid, seq, {**detail, "checks": results})
            if check.kind == "approval":
                self.journal.clear_request(self.rid, "approve")  # answered: written down first, then taken
            self.progress(_event(result, self.rid, step.name))
            if result.rejected:
                raise Rejected(name, result.by)
            if not result.ok:
                raise ReleaseFailed(f"check {name} ({check.kind}): {result.detail}")

    def _approval(self, check: Any, step: Step, seq: int, detail: dict[str, Any],
                  results: list[dict[str, Any]]) -> CheckResult:
        waiting = {"check": check.name, "since": time.time(), "until": time.time() + check.timeout,
                   "timeout": check.timeout, "on_timeout": check.on_timeout}
        self.journal.step_note(self.rid, seq, {**detail, "checks": results, "awaiting_approval": waiting})
        after = "rolls back" if check.on_timeout == "rollback" else "proceeds"
        self.progress(Event("approval", f"{step.name}: waiting up to {check.timeout:g}s for approval {check.name}: "
                            f"bluegreen promote approves, bluegreen abort rejects (then it {after})",
                            release=self.rid, step=step.name, check=check.name, timeout=check.timeout,
                            on_timeout=check.on_timeout, until=waiting["until"]))
        return checks.approval(check, self.answer)


def _event(result: CheckResult, release: int, step: str) -> Event:
    data = {k: v for k, v in result.to_dict().items() if k not in ("name", "kind")}
    text = f"{step}: {result.line()}"
    if result.kind == "job" and not result.ok and result.output.strip():
        text += "".join(f"\n    {line}" for line in result.output.strip().splitlines()[-6:])
    return Event("check", text, release=release, step=step, check=result.name, check_kind=result.kind, **data)
