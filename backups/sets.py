"""Backup sets: the database and the config files of one moment, with a manifest.

A set is a directory ``<backups.dir>/<id>/`` (0700) holding the database snapshot, copies of the
config files (0600) and ``manifest.json``: sha256 and size of every file, source, engine and
server version, schema revision, row counts per table, the release it belongs to, and when.
A set is written under a ``.partial`` name and renamed when complete, so a half-written set is
never listed. ``restore`` first takes a safety set of the current state, so restoring never
loses anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.backups import postgres, sqlite
from bluegreen.backups.files import copy_file, fsync_dir, sha256
from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.errors import BackupError

MANIFEST = "manifest.json"
PROXY_CONFIG = "proxy.cfg"  # kept for the record; bluegreen rewrites it from the live weights
VERIFIED = "verified.json"
Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class Sources:
    """What a set captures: the application database and the config files."""

    database_url: str  # sqlite:///… resolved to an absolute path, or postgresql://…
    sqlite_path: Path | None
    config_files: dict[str, Path]  # name in the set -> file
    lock_wait_timeout: float = 10.0


@dataclass
class BackupSet:
    id: str
    path: Path
    manifest: dict[str, Any]
    verified_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": str(self.path), "verified_at": self.verified_at, **self.manifest}


@dataclass
class VerifyReport:
    id: str
    ok: bool
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BackupStore:
    def __init__(self, directory: Path, sources: Sources) -> None:
        self.directory = directory
        self.sources = sources

    # -- create ------------------------------------------------------------------------------
    def create(self, reason: str = "", release_id: int | None = None, kind: str = "manual",
               progress: Progress = _quiet, database: tuple[str, Path | None] | None = None) -> BackupSet:
        """A set of the live database and config files; or, with ``database`` = (url, SQLite path), of
        that database alone (a copy restored from the archive: the config files' past is not in it)."""
        database_url, sqlite_path = database or (self.sources.database_url, self.sources.sqlite_path)
        config_files = {} if database else self.sources.config_files
        now = time.time()
        # Sorts in creation order (microseconds), unique across processes (random suffix).
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        set_id = f"{stamp}-{secrets.token_hex(2)}"
        try:
            private_dir(self.directory)
            work = self.directory / f".{set_id}.partial"
            work.mkdir(mode=0o700)
        except OSError as exc:
            raise BackupError(f"cannot create a backup set in {self.directory}: {exc}",
                              "check free space (df -h) and permissions of backups.dir") from None
        try:
            files = []
            db_file: str | None
            db: dict[str, object]
            if not database_url:  # a model server with no application database: config only
                db_file, db = None, {"engine": "none", "row_counts": {}, "source": ""}
            elif sqlite_path is not None:
                progress("snapshot of the database (sqlite)")
                db_file = "database.sqlite"
                db = sqlite.snapshot(sqlite_path, work / db_file)
            else:
                progress("snapshot of the database (postgresql)")
                db_file = "database.dump"
                db = postgres.snapshot(database_url, work / db_file, self.sources.lock_wait_timeout)
            if db_file is not None:
                files.append(self._describe(work / db_file, db_file, str(db["source"])))
            for name, source in sorted(config_files.items()):
                if source.exists():
                    copy_file(source, work / name)
                    files.append(self._describe(work / name, name, str(source)))
            manifest = {"id": set_id, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "kind": kind, "reason": reason, "release_id": release_id,
                        "database": {**db, "file": db_file}, "files": files}
            manifest_path = work / MANIFEST
            manifest_path.write_text(json.dumps(manifest, indent=2))
            os.chmod(manifest_path, 0o600)
            fsync_dir(work)
            final = self.directory / set_id
            os.replace(work, final)
            fsync_dir(self.directory)
        except BaseException as exc:
            shutil.rmtree(work, ignore_errors=True)
            if isinstance(exc, OSError):
                raise BackupError(f"writing backup set {set_id} failed: {exc}",
                                  "check free space (df -h) and permissions of backups.dir") from None
            raise
        progress(f"backup set {set_id}: {', '.join(f['name'] for f in files)}")
        return BackupSet(set_id, final, manifest)

    @staticmethod
    def _describe(path: Path, name: str, source: str) -> dict[str, Any]:
        return {"name": name, "source": source, "sha256": sha256(path), "size": path.stat().st_size}

    # -- read --------------------------------------------------------------------------------
    def all_sets(self) -> list[BackupSet]:
        """Complete sets, newest first."""
        if not self.directory.exists():
            return []
        out = []
        for path in sorted(self.directory.iterdir(), reverse=True):
            if path.name.startswith(".") or not (path / MANIFEST).exists():
                continue
            out.append(self._load(path))
        return out

    def get(self, set_id: str) -> BackupSet:
        path = self.directory / set_id
        if "/" in set_id or set_id.startswith(".") or not (path / MANIFEST).exists():
            raise BackupError(f"no backup set {set_id} in {self.directory}", "bluegreen backup list")
        return self._load(path)

    @staticmethod
    def _load(path: Path) -> BackupSet:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise BackupError(f"the manifest of {path.name} cannot be read: {exc}") from None
        verified = None
        with contextlib.suppress(OSError, ValueError):
            verified = json.loads((path / VERIFIED).read_text()).get("verified_at")
        return BackupSet(path.name, path, manifest, verified)

    # -- verify ------------------------------------------------------------------------------
    def verify(self, set_id: str, progress: Progress = _quiet) -> VerifyReport:
        """Re-hash every file, restore the database into a scratch copy and compare row counts."""
        backup = self.get(set_id)
        problems = []
        for f in backup.manifest["files"]:
            path = backup.path / f["name"]
            if not path.exists():
                problems.append(f"{f['name']} is missing")
            elif path.stat().st_size != f["size"] or sha256(path) != f["sha256"]:
                problems.append(f"{f['name']} does not match its sha256 in the manifest")
        db = backup.manifest["database"]
        db_path = backup.path / str(db["file"])
        if not problems and db["engine"] != "none":
            progress(f"restoring {set_id}'s database into a scratch copy")
            if db["engine"] == "sqlite":
                with tempfile.TemporaryDirectory(prefix="bluegreen-verify-") as tmp:
                    problems += sqlite.verify_copy(db_path, Path(tmp) / "scratch.sqlite", db["row_counts"])
            else:
                problems += postgres.verify_copy(self.sources.database_url, db_path, db["row_counts"])
        if not problems:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            marker = backup.path / VERIFIED
            marker.write_text(json.dumps({"verified_at": stamp}))
            os.chmod(marker, 0o600)
        return VerifyReport(set_id, not problems, problems)

    # -- restore -----------------------------------------------------------------------------
    def restore(self, set_id: str, progress: Progress = _quiet, reason: str = "") -> tuple[BackupSet, BackupSet]:
        """Verify the set, take a safety set of the current state, then restore the database.

        Returns (restored set, safety set). Config files are restored too, except the proxy's,
        which bluegreen writes from the live weights.
        """
        report = self.verify(set_id, progress)
        if not report.ok:
            raise BackupError(f"backup set {set_id} failed verification and was not restored: "
                              + "; ".join(report.problems), "bluegreen backup list   (pick another set)")
        backup = self.get(set_id)
        progress("safety snapshot of the current state first")
        safety = self.create(reason=f"safety snapshot before restoring {set_id}" + (f": {reason}" if reason else ""),
                             kind="safety", progress=progress)
        db = backup.manifest["database"]
        if db["engine"] != "none" and not self.sources.database_url:
            raise BackupError(f"{set_id} holds a {db['engine']} database but database.url is empty")
        if db["engine"] == "none":
            pass  # config files only
        elif db["engine"] == "sqlite":
            progress(f"restoring the database from {set_id}")
            if self.sources.sqlite_path is None:
                raise BackupError(f"{set_id} holds a SQLite database but database.url is PostgreSQL")
            sqlite.restore(backup.path / db["file"], self.sources.sqlite_path)
        else:
            progress(f"restoring the database from {set_id}")
            postgres.restore(self.sources.database_url, backup.path / db["file"], db["row_counts"])
        for f in backup.manifest["files"]:
            target = self.sources.config_files.get(f["name"])
            if target is not None and f["name"] not in (db["file"], PROXY_CONFIG):
                copy_file(backup.path / f["name"], target)
        return backup, safety

    # -- retention ---------------------------------------------------------------------------
    def prune_scheduled(self, keep_daily: int, keep_weekly: int, now: float | None = None) -> list[str]:
        """Remove scheduled sets beyond the retention: the newest set of each of the last ``keep_daily``
        days and of each of the last ``keep_weekly`` ISO weeks stay (and the newest verified set)."""
        sets = [s for s in self.all_sets() if s.manifest.get("kind") == "scheduled"]
        keep_ids = set(scheduled_to_keep([(s.id, str(s.manifest.get("created_at", ""))) for s in sets],
                                         keep_daily, keep_weekly, now))
        newest_verified = next((s.id for s in self.all_sets() if s.verified_at), None)
        removed = []
        for backup in sets:
            if backup.id in keep_ids or backup.id == newest_verified:
                continue
            shutil.rmtree(backup.path)
            removed.append(backup.id)
        return removed

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest ``keep`` sets; the newest verified set is always kept."""
        sets = self.all_sets()
        newest_verified = next((s.id for s in sets if s.verified_at), None)
        removed = []
        for backup in sets[keep:]:
            if backup.id == newest_verified:
                continue
            shutil.rmtree(backup.path)
            removed.append(backup.id)
        return removed


def scheduled_to_keep(sets: list[tuple[str, str]], keep_daily: int, keep_weekly: int,
                      now: float | None = None) -> list[str]:
    """Grandfather-father-son: of (id, created_at) pairs, the newest per day for the last ``keep_daily``
    days and the newest per ISO week for the last ``keep_weekly`` weeks (days and weeks in UTC)."""
    import datetime as dt

    today = dt.datetime.fromtimestamp(now if now is not None else time.time(), dt.UTC).date()
    days = {today - dt.timedelta(days=i) for i in range(keep_daily)}
    weeks = {(today - dt.timedelta(weeks=i)).isocalendar()[:2] for i in range(keep_weekly)}
    newest_of: dict[object, tuple[str, str]] = {}
    for set_id, created in sets:
        try:
            day = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").date()
        except ValueError:
            continue
        for bucket in (("day", day) if day in days else None, ("week", day.isocalendar()[:2])
                       if day.isocalendar()[:2] in weeks else None):
            if bucket is not None and (bucket not in newest_of or created > newest_of[bucket][1]):
                newest_of[bucket] = (set_id, created)
    return sorted({set_id for set_id, _ in newest_of.values()})
