"""The backup commands: each holds the deployment lock (so no release changes the database
underneath it) and leaves an audit row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from bluegreen.backups.litestream import Litestream
from bluegreen.backups.pgbackrest import PgBackRest
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


def restore_to_point(dep: Deployment, into: str | None, at: str | None = None, release_id: int | None = None,
                     progress: Progress = _quiet) -> dict[str, Any]:
    """Rebuild the application database as of a time or a release's restore point.

    With ``into`` (a new SQLite file, or a new database on the live PostgreSQL server) live data
    is untouched and the answer compares the copy with live: row counts per table and the columns
    that differ, for looking before leaping. Without it the moment replaces the live database: the
    copy becomes a verified backup set, and the ordinary restore takes a safety set first and swaps
    it in (SQLite through the backup API under its write lock, PostgreSQL by renaming databases
    after closing the sessions), all under the deployment lock and in history.
    """
    from bluegreen.orchestrator.errors import InvalidRequest

    archive = dep.pitr
    if archive is None:
        raise InvalidRequest("point-in-time restores need the continuous archive: backups.pitr is \"off\"",
                             "set backups.pitr (runbooks/pitr.md) and bluegreen up; until then, bluegreen backup "
                             "restore ID restores a backup set")
    point, at, what = _resolve_point(dep, at, release_id)
    if into is None:
        return _restore_in_place(dep, point, at, what, progress)
    with dep.state.action(dep.actor, "backup restore", {"into": into, "at": at, "release": release_id}) as audit:
        progress(f"restoring the database as of {what} into {into}")
        report = _copy_sqlite(dep, Path(into), point, at) if isinstance(archive, Litestream) \
            else _copy_postgres(dep, into, point, at, progress)
        report["as_of"] = what
        audit.notes.append(f"restored as of {what} into {into}")
        return report


def _resolve_point(dep: Deployment, at: str | None, release_id: int | None
                   ) -> tuple[dict[str, Any] | None, str | None, str]:
    """(the release's restore point, or None; the time in UTC, or None; how to say it)."""
    from datetime import datetime

    from bluegreen.orchestrator.errors import InvalidRequest
    from bluegreen.orchestrator.state.journal import Journal

    archive = dep.pitr
    assert archive is not None
    if release_id is not None:
        rec = Journal(dep.state).get(release_id)
        if rec is None or rec.kind != "release":
            raise InvalidRequest(f"there is no release {release_id}", "bluegreen history")
        step = rec.find_step("backup")
        point = (step.detail.get("restore_point") if step is not None else None) or {}
        if point.get("tool") not in (None, archive.tool) or not ("txid" in point or "name" in point):
            raise InvalidRequest(f"release {release_id} has no restore point in the {archive.tool} archive (it ran "
                                 "with pitr off or with another archive, or the archive failed then)",
                                 f"bluegreen backup restore ID of its backup set "
                                 f"({(step.detail.get('backup') if step else None) or 'see bluegreen backup list'})")
        described = f"transaction {point['txid']}" if "txid" in point else f"restore point {point['name']}"
        return point, None, f"release {release_id}'s restore point ({described}, {point.get('at')})"
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
    window = archive.window()
    outside = window is None or at < window[0]
    if isinstance(archive, Litestream) and not outside:
        txid = archive.txid_at(at)
        if txid is None:
            outside = True
        else:
            return {"txid": txid}, at, f"{at} (transaction {txid}, the last one archived by then)"
    if outside:
        shown = f"{window[0]} to now" if window else "empty"
        raise InvalidRequest(f"--at {at} is outside the recoverable window ({shown})",
                             "choose a time inside it, or restore a backup set: bluegreen backup list")
    return None, at, at


def _copy_sqlite(dep: Deployment, into: Path, point: dict[str, Any] | None, at: str | None) -> dict[str, Any]:
    import sqlite3

    from bluegreen.backups.sqlite import table_counts
    from bluegreen.orchestrator.errors import BackupError

    archive = dep.pitr
    assert isinstance(archive, Litestream) and point is not None
    archive.restore(into, txid=int(point["txid"]))
    try:
        with sqlite3.connect(f"file:{into}?mode=ro", uri=True, timeout=60) as copy:
            restored = table_counts(copy), _columns(copy)
        live_path = dep.settings.sqlite_path
        assert live_path is not None
        with sqlite3.connect(f"file:{live_path}?mode=ro", uri=True, timeout=60) as live:
            current = table_counts(live), _columns(live)
    except sqlite3.Error as exc:
        raise BackupError(f"the restored copy {into} cannot be read: {exc}") from None
    return _compare(str(into), restored, current)


def _copy_postgres(dep: Deployment, into: str, point: dict[str, Any] | None, at: str | None,
                   progress: Progress) -> dict[str, Any]:
    import re
    import tempfile

    from bluegreen.backups import postgres
    from bluegreen.orchestrator.errors import InvalidRequest

    archive = dep.pitr
    assert isinstance(archive, PgBackRest)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", into):
        raise InvalidRequest(f"--into {into!r} is not a database name: letters, digits and _ (a new database on "
                             "the live server)", "bluegreen backup restore --help")
    live = postgres.Target(dep.settings.database.url)
    conn = live.connect(dbname="postgres")
    try:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (into,)).fetchone()
    finally:
        conn.close()
    if exists:
        raise InvalidRequest(f"--into {into}: the database exists, and a point-in-time restore makes a new one",
                             "choose another name, or drop it first (DROP DATABASE)")
    with archive.scratch(**_scratch_target(point, at)) as server, \
            tempfile.TemporaryDirectory(prefix="bluegreen-pitr-") as tmp:
        progress(f"the cluster as of the point is up on 127.0.0.1:{server.port} ({server.seconds:.1f}s, from "
                 f"backup {server.backup}); copying {live.dbname} out of it into {into}")
        dump = Path(tmp) / "database.dump"
        postgres.snapshot(server.url, dump)
        postgres.restore_into(live, dump, into)
    copy, current = postgres.Target(dep.settings.database.url.rsplit("/", 1)[0] + "/" + into), live
    return _compare(into, _pg_shape(copy), _pg_shape(current)) | {"restore_s": server.seconds}


def _scratch_target(point: dict[str, Any] | None, at: str | None) -> dict[str, Any]:
    return {"name": point["name"], "lsn": point.get("lsn")} if point else {"at": at}


def _pg_shape(target: Any) -> tuple[dict[str, int], dict[str, list[str]]]:
    from bluegreen.backups.postgres import table_counts

    conn = target.connect()
    try:
        columns: dict[str, list[str]] = {}
        for schema, table, column in conn.execute(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE table_schema "
                "NOT IN ('pg_catalog', 'information_schema') ORDER BY table_schema, table_name, ordinal_position"):
            columns.setdefault(table if schema == "public" else f"{schema}.{table}", []).append(column)
        return table_counts(conn), columns
    finally:
        conn.close()


def _compare(into: str, restored: tuple[dict[str, int], dict[str, list[str]]],
             live: tuple[dict[str, int], dict[str, list[str]]]) -> dict[str, Any]:
    (restored_counts, restored_columns), (live_counts, live_columns) = restored, live
    schema = {table: {"only_restored": sorted(set(cols) - set(live_columns.get(table, []))),
                      "only_live": sorted(set(live_columns.get(table, [])) - set(cols))}
              for table, cols in restored_columns.items()}
    return {"into": into, "rows": restored_counts, "live_rows": live_counts,
            "schema_differences": {t: d for t, d in schema.items() if d["only_restored"] or d["only_live"]}}


def _pgbackrest_backup(archive: PgBackRest, full_every_days: int, progress: Progress) -> dict[str, Any]:
    """A differential backup, or a full one when the newest full is older than ``full_every_days``;
    then ``pgbackrest verify`` over the whole repository."""
    import time

    fulls = [b["timestamp"]["stop"] for b in archive.backups() if b.get("type") == "full"]
    kind = "diff" if fulls and time.time() - max(fulls) < full_every_days * 86400 else "full"
    progress(f"pgBackRest {kind} backup of stanza {archive.stanza}")
    done = archive.backup(kind)
    progress(f"pgBackRest backup {done['label']} in {done['seconds']:.1f}s; verifying the repository")
    return {**done, "problems": archive.verify()}


def _columns(conn: Any) -> dict[str, list[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%'")]
    return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in tables}


def _restore_in_place(dep: Deployment, point: dict[str, Any] | None, at: str | None, what: str,
                      progress: Progress) -> dict[str, Any]:
    import tempfile

    archive = dep.pitr
    assert archive is not None
    with dep.lock("backup restore"), dep.state.action(dep.actor, "backup restore",
                                                      {"at": at, "point": point, "in_place": True}) as audit:
        progress(f"rebuilding the database as of {what} beside live")
        if isinstance(archive, Litestream):
            with tempfile.TemporaryDirectory(prefix="bluegreen-pitr-", dir=dep.settings.state_dir) as tmp:
                copy = Path(tmp) / "restored.db"
                assert point is not None
                archive.restore(copy, txid=int(point["txid"]))
                backup = dep.backups.create(reason=f"the database as of {what}", kind="pitr", progress=progress,
                                            database=(f"sqlite:///{copy}", copy))
        else:
            with archive.scratch(**_scratch_target(point, at)) as server:
                progress(f"the cluster as of the point is up on 127.0.0.1:{server.port} ({server.seconds:.1f}s)")
                backup = dep.backups.create(reason=f"the database as of {what}", kind="pitr", progress=progress,
                                            database=(server.url, None))
        restored, safety = dep.backups.restore(backup.id, progress, reason=f"point-in-time restore to {what}")
        audit.notes.append(f"restored as of {what} in place (set {restored.id}); safety snapshot {safety.id}")
        return {"in_place": True, "as_of": what, "set": restored.id, "safety": safety.id,
                "rows": restored.manifest["database"]["row_counts"]}


def scheduled(dep: Deployment, progress: Progress = _quiet) -> dict[str, Any]:
    """The timer's backup: a set, verified by restoring it into scratch, recorded in history; old
    scheduled sets pruned by age. Skipped (and said so) while another change holds the lock."""
    import time

    from bluegreen.orchestrator.errors import BluegreenError, LockHeld
    from bluegreen.orchestrator.state.journal import Journal

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
            if isinstance(dep.pitr, PgBackRest):  # the archive's base backup too, and its own verify
                result["pgbackrest"] = _pgbackrest_backup(dep.pitr, b.pgbackrest.full_every_days, progress)
                result["problems"] += result["pgbackrest"]["problems"]
                result["ok"] = result["ok"] and not result["pgbackrest"]["problems"]
        except BluegreenError as exc:
            result["ok"] = False
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
