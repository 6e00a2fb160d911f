"""The backup commands: each holds the deployment lock (so no release changes the database
underneath it) and leaves an audit row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

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


def restore_to_point(dep: Deployment, into: Path, at: str | None = None, release_id: int | None = None,
                     progress: Progress = _quiet) -> dict[str, Any]:
    """Rebuild the application database as of a time or a release's restore point into ``into``.

    Live data is untouched. The answer compares the copy with live: row counts per table and the
    columns that differ, for looking before leaping.
    """
    import sqlite3
    from datetime import datetime

    from bluegreen.backups.sqlite import table_counts
    from bluegreen.orchestrator.errors import BackupError, InvalidRequest
    from bluegreen.orchestrator.journal import Journal

    archive = dep.pitr
    if archive is None:
        raise InvalidRequest("point-in-time restores need the continuous archive: backups.pitr is \"off\"",
                             "set backups.pitr = \"litestream\" and bluegreen up; until then, bluegreen backup "
                             "restore ID restores a backup set")
    txid = None
    if release_id is not None:
        rec = Journal(dep.state).get(release_id)
        if rec is None or rec.kind != "release":
            raise InvalidRequest(f"there is no release {release_id}", "bluegreen history")
        step = rec.find_step("backup")
        point = (step.detail.get("restore_point") if step is not None else None) or {}
        if "txid" not in point:
            raise InvalidRequest(f"release {release_id} has no restore point in the archive (it ran with pitr off, or "
                                 "the archive failed then)", f"bluegreen backup restore ID of its backup set "
                                 f"({(step.detail.get('backup') if step else None) or 'see bluegreen backup list'})")
        txid = int(point["txid"])
        what = f"release {release_id}'s restore point (transaction {txid}, {point.get('at')})"
    else:
        assert at is not None
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"--at {at!r} is not a time: use ISO 8601, e.g. 2026-11-25T14:03:00Z",
                                 "bluegreen backup restore --help") from None
        if when.tzinfo is None:
            raise InvalidRequest(f"--at {at!r} has no time zone: add Z for UTC or an offset",
                                 "bluegreen backup restore --help")
        if when > datetime.now(UTC):
            raise InvalidRequest(f"--at {at} is in the future", "bluegreen backup restore --help")
        at = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        txid = archive.txid_at(at)
        if txid is None:
            window = archive.window()
            shown = f"{window[0]} to now" if window else "empty"
            raise InvalidRequest(f"--at {at} is outside the recoverable window ({shown})",
                                 "choose a time inside it, or restore a backup set: bluegreen backup list")
        what = f"{at} (transaction {txid}, the last one archived by then)"
    with dep.state.action(dep.actor, "backup restore", {"into": str(into), "at": at, "release": release_id}) as audit:
        progress(f"restoring the database as of {what} into {into}")
        archive.restore(into, txid=txid)
        try:
            with sqlite3.connect(f"file:{into}?mode=ro", uri=True, timeout=60) as copy:
                restored_counts = table_counts(copy)
                restored_columns = _columns(copy)
            live_path = dep.settings.sqlite_path
            assert live_path is not None
            with sqlite3.connect(f"file:{live_path}?mode=ro", uri=True, timeout=60) as live:
                live_counts = table_counts(live)
                live_columns = _columns(live)
        except sqlite3.Error as exc:
            raise BackupError(f"the restored copy {into} cannot be read: {exc}") from None
        schema = {table: {"only_restored": sorted(set(cols) - set(live_columns.get(table, []))),
                          "only_live": sorted(set(live_columns.get(table, [])) - set(cols))}
                  for table, cols in restored_columns.items()}
        report = {"into": str(into), "as_of": what, "rows": restored_counts, "live_rows": live_counts,
                  "schema_differences": {t: d for t, d in schema.items() if d["only_restored"] or d["only_live"]}}
        audit.notes.append(f"restored as of {what} into {into}")
        return report


def _columns(conn: Any) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%'")]
    return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}


def scheduled(dep: Deployment, progress: Progress = _quiet) -> dict[str, Any]:
    """The timer's backup: a set, verified by restoring it into scratch, recorded in history; old
    scheduled sets pruned by age. Skipped (and said so) while another change holds the lock."""
    import time

    from bluegreen.orchestrator.errors import BluegreenError, LockHeld
    from bluegreen.orchestrator.journal import Journal

    b = dep.settings.backups
    try:
        lock = dep.lock("backup (scheduled)")
    except LockHeld as exc:
        progress(f"scheduled backup skipped: {exc.message}")
        return {"ok": True, "skipped": exc.message}
    began = time.monotonic()
    with lock, dep.state.action(dep.actor, "backup (scheduled)") as audit:
        journal = Journal(dep.state)
        live = dep.state.live_color() or "blue"
        record = dep.state.environment(live)
        image, version = (record.image, record.version) if record else ("", "")
        rid = journal.begin("backup", dep.actor, image, version, {}, live, live, image, version, {},
                            {"steps": [{"name": "backup"}]})
        journal.step_started(rid, 0, "backup")
        result: dict[str, Any] = {"ok": False, "id": None, "problems": [], "pruned": []}
        try:
            backup = dep.backups.create(reason="scheduled", kind="scheduled", progress=progress)
            result["id"] = backup.id
            report = dep.backups.verify(backup.id, progress)
            result["ok"], result["problems"] = report.ok, list(report.problems)
            result["pruned"] = dep.backups.prune_scheduled(b.keep_daily, b.keep_weekly)
        except BluegreenError as exc:
            result["problems"].append(exc.message)
        summary = (f"scheduled backup {result['id']} verified" if result["ok"] else
                   f"scheduled backup FAILED: {'; '.join(result['problems'])}")
        journal.step_finished(rid, 0, "done" if result["ok"] else "failed", result)
        journal.finish(rid, "passed" if result["ok"] else "failed", summary, round(time.monotonic() - began, 3))
        audit.notes.append(summary)
        if not result["ok"]:
            dep.notify("backup_failed", summary, **result)
        progress(summary)
        return result
