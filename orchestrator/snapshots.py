"""The backup commands: each holds the deployment lock (so no release changes the database
underneath it) and leaves an audit row."""

from __future__ import annotations

from collections.abc import Callable

from bluegreen.backups.sets import BackupSet, VerifyReport
from bluegreen.orchestrator.deployment import Deployment

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def create(dep: Deployment, reason: str = "", progress: Progress = _quiet) -> BackupSet:
    with dep.lock("backup create"), dep.state.action(dep.actor, "backup create", {"reason": reason}) as audit:
        backup = dep.backups.create(reason=reason, kind="manual", progress=progress)
        audit.notes.append(f"backup set {backup.id}")
        return backup


def verify(dep: Deployment, set_id: str, progress: Progress = _quiet) -> VerifyReport:
    with dep.state.action(dep.actor, "backup verify", {"id": set_id}) as audit:
        report = dep.backups.verify(set_id, progress)
        audit.notes.append("verified" if report.ok else "FAILED: " + "; ".join(report.problems))
        return report


def restore(dep: Deployment, set_id: str, progress: Progress = _quiet) -> tuple[BackupSet, BackupSet]:
    with dep.lock("backup restore"), dep.state.action(dep.actor, "backup restore", {"id": set_id}) as audit:
        restored, safety = dep.backups.restore(set_id, progress)
        audit.notes.append(f"restored {restored.id}; safety snapshot {safety.id}")
        return restored, safety


def prune(dep: Deployment, keep: int | None = None) -> list[str]:
    keep = dep.settings.backups.keep if keep is None else keep
    with dep.lock("backup prune"), dep.state.action(dep.actor, "backup prune", {"keep": keep}) as audit:
        removed = dep.backups.prune(keep)
        audit.notes.append(f"removed {len(removed)} sets")
        return removed
