"""SQLite snapshots through the online backup API, never a plain file copy of a live database.

The copy is made in one step (``pages=-1``): a stepped backup restarts whenever another
connection writes and can livelock under steady writes, while a single step holds one read
transaction and sees one consistent state. The copy is switched out of WAL mode, checked with
``PRAGMA integrity_check``, fsynced and renamed into place, so a snapshot file either is whole
or does not exist.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from bluegreen.backups.files import fsync_dir, fsync_file
from bluegreen.orchestrator.errors import BackupError


def _connect(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=timeout, isolation_level=None)


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {name: int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in names}


def schema_revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT max(version) FROM bluegreen_schema_migrations").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else str(row[0])


def integrity(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def snapshot(source: Path, dest: Path) -> dict[str, object]:
    """Copy the live database at ``source`` to ``dest``; return what the manifest records."""
    if not source.exists():
        raise BackupError(f"the SQLite database {source} does not exist", "check database.url in bluegreen.toml")
    partial = dest.with_name(dest.name + ".partial")
    try:
        src = _connect(source)
        try:
            dst = _connect(partial)
            try:
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=DELETE")
                check = integrity(dst)
                if check != "ok":
                    raise BackupError(f"the snapshot of {source} failed its integrity check: {check}")
                counts = table_counts(dst)
                revision = schema_revision(dst)
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(partial, 0o600)
        fsync_file(partial)
        os.replace(partial, dest)
        fsync_dir(dest.parent)
    except (sqlite3.Error, OSError) as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise BackupError(f"snapshot of {source} failed: {exc}",
                          "check free space where backups are kept (df -h) and that the database is readable"
                          ) from None
    return {"engine": "sqlite", "server_version": sqlite3.sqlite_version, "row_counts": counts,
            "schema_revision": revision, "source": str(source)}


def verify_copy(snapshot_file: Path, scratch: Path, expected_counts: dict[str, int]) -> list[str]:
    """Restore into a scratch file and check it: integrity and row counts; a list of problems."""
    problems = []
    try:
        src = _connect(snapshot_file)
        dst = _connect(scratch)
        try:
            src.backup(dst, pages=-1)
            check = integrity(dst)
            if check != "ok":
                problems.append(f"integrity check: {check}")
            counts = table_counts(dst)
        finally:
            src.close()
            dst.close()
    except sqlite3.Error as exc:
        return [f"cannot read it as a SQLite database: {exc}"]
    if counts != expected_counts:
        problems.append(f"row counts {counts} differ from the manifest's {expected_counts}")
    return problems


def restore(snapshot_file: Path, live: Path) -> None:
    """Write the snapshot's pages into the live database through the backup API (one step)."""
    try:
        src = _connect(snapshot_file)
        dst = _connect(live)
        try:
            src.backup(dst, pages=-1)
        finally:
            src.close()
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"restoring {live} from {snapshot_file} failed: {exc}") from None
