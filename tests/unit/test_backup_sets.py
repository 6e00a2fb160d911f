"""Backup sets of real SQLite files (with a concurrent writer): create, verify, restore, prune, retention."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bluegreen.backups.sets import BackupStore, Sources
from bluegreen.orchestrator.errors import BackupError


class Writer:
    """Inserts rows into ``items`` from its own connection, one transaction each, until stopped.

    A test that writes a row of its own asks it to pause first (``paused()``) and waits for the
    acknowledgement, so the two never race for SQLite's write lock: a writer looping without
    pauses starves every other connection past any busy timeout on a small machine.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.written = 0
        self.warmed_up = threading.Event()  # set once it has written WARM_UP rows
        self._pause = threading.Event()
        self._is_paused = threading.Event()
        self._resume = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    WARM_UP = 50

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        while not self.stop.is_set():
            if self._pause.is_set():
                self._is_paused.set()
                self._resume.wait()
                self._resume.clear()
                continue
            conn.execute("INSERT INTO items (note) VALUES ('filler')")
            self.written += 1
            if self.written >= self.WARM_UP:
                self.warmed_up.set()
        conn.close()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._pause.set()
        assert self._is_paused.wait(30), "the writer did not pause"
        try:
            yield
        finally:
            self._pause.clear()
            self._is_paused.clear()
            self._resume.set()

    def __enter__(self) -> Writer:
        self.thread.start()
        assert self.warmed_up.wait(30), "the writer did not start writing"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._resume.set()
        self.thread.join()


def make_sqlite(path: Path, rows: int = 1000) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items (note) VALUES (?)", [("x" * 200,)] * rows)
    conn.execute("COMMIT")
    conn.close()


def count(path: Path, where: str = "1") -> int:
    with sqlite3.connect(path, timeout=60) as conn:
        return int(conn.execute(f"SELECT count(*) FROM items WHERE {where}").fetchone()[0])


@pytest.fixture
def sqlite_store(tmp_path: Path) -> tuple[BackupStore, Path]:
    db = tmp_path / "app.db"
    make_sqlite(db)
    config = tmp_path / "bluegreen.toml"
    config.write_text('project = "x"\n')
    store = BackupStore(tmp_path / "backups", Sources(f"sqlite:///{db}", db, {"bluegreen.toml": config}))
    return store, db


def test_a_marker_written_just_before_a_snapshot_under_load_survives_a_restore(
    sqlite_store: tuple[BackupStore, Path]
) -> None:
    store, db = sqlite_store
    with Writer(db) as writer:
        with writer.paused(), sqlite3.connect(db, timeout=60, isolation_level=None) as conn:
            conn.execute("INSERT INTO items (note) VALUES ('marker')")
        before = writer.written
        backup = store.create(reason="test")  # the writer goes on meanwhile
        during = writer.written - before
    assert during > 0
    counts = backup.manifest["database"]["row_counts"]["items"]
    assert store.verify(backup.id).ok
    with sqlite3.connect(db, isolation_level=None, timeout=60) as conn:
        conn.execute("DELETE FROM items")  # the accident the backup is for
    store.restore(backup.id)
    assert count(db, "note = 'marker'") == 1
    assert count(db) == counts
    with sqlite3.connect(db, timeout=60) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_the_set_is_private_and_its_manifest_describes_every_file(sqlite_store: tuple[BackupStore, Path]) -> None:
    store, _db = sqlite_store
    backup = store.create(reason="audit", release_id=7)
    m = backup.manifest
    assert (m["reason"], m["release_id"], m["database"]["engine"]) == ("audit", 7, "sqlite")
    assert [f["name"] for f in m["files"]] == ["database.sqlite", "bluegreen.toml"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in m["files"])
    assert oct(backup.path.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in backup.path.iterdir()} == {"0o600"}
    with sqlite3.connect(backup.path / "database.sqlite", timeout=60) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # a self-contained file


def test_a_flipped_byte_fails_verify_and_is_refused_by_restore(sqlite_store: tuple[BackupStore, Path]) -> None:
    store, db = sqlite_store
    backup = store.create()
    target = backup.path / "database.sqlite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    report = store.verify(backup.id)
    assert not report.ok and report.problems == ["database.sqlite does not match its sha256 in the manifest"]
    before = count(db)
    with pytest.raises(BackupError) as info:
        store.restore(backup.id)
    assert info.value.message.startswith(f"backup set {backup.id} failed verification and was not restored")
    assert count(db) == before
    assert len(store.all_sets()) == 1  # no safety set either: nothing was touched


def test_restore_leaves_a_safety_snapshot_that_itself_verifies(sqlite_store: tuple[BackupStore, Path]) -> None:
    store, db = sqlite_store
    backup = store.create()
    with sqlite3.connect(db, isolation_level=None, timeout=60) as conn:
        conn.execute("INSERT INTO items (note) VALUES ('written after the backup')")
    _restored, safety = store.restore(backup.id)
    assert count(db, "note = 'written after the backup'") == 0
    assert store.verify(safety.id).ok
    assert safety.manifest["kind"] == "safety"
    with sqlite3.connect(safety.path / "database.sqlite", timeout=60) as conn:
        assert conn.execute("SELECT count(*) FROM items WHERE note = 'written after the backup'").fetchone()[0] == 1


def test_a_full_disk_fails_cleanly_and_leaves_no_partial_set(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_sqlite(db, rows=5000)  # about 1.2 MB
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        store = BackupStore(small / "backups", Sources(f"sqlite:///{db}", db, {}))
        with pytest.raises(BackupError) as info:
            store.create()
        assert info.value.message.endswith("failed: database or disk is full")
        assert "df -h" in info.value.hint
        assert list((small / "backups").iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_prune_keeps_the_newest_and_the_newest_verified(sqlite_store: tuple[BackupStore, Path]) -> None:
    store, _db = sqlite_store
    first = store.create()
    assert store.verify(first.id).ok
    others = [store.create() for _ in range(3)]
    removed = store.prune(keep=2)
    kept = [s.id for s in store.all_sets()]
    assert kept == [others[2].id, others[1].id, first.id]
    assert removed == [others[0].id]


def test_an_unreachable_postgresql_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql://bluegreen:s3cret@127.0.0.1:1/nothing"
    store = BackupStore(tmp_path / "backups", Sources(url, None, {}))
    with pytest.raises(BackupError) as info:
        store.create()
    assert info.value.message.startswith("cannot connect to postgresql://bluegreen:***@127.0.0.1:1/nothing")
    assert "s3cret" not in info.value.message + info.value.hint


def test_scheduled_sets_are_kept_one_per_day_and_one_per_week() -> None:
    """Grandfather-father-son retention over (id, created_at): days and ISO weeks in UTC."""
    import calendar
    import time as _time

    from bluegreen.backups.sets import scheduled_to_keep

    now = calendar.timegm(_time.strptime("2026-11-25T12:00:00Z", "%Y-%m-%dT%H:%M:%SZ"))  # a Wednesday
    sets = [
        ("a", "2026-11-25T02:30:00Z"), ("b", "2026-11-25T10:00:00Z"),  # today: b, the newer
        ("c", "2026-11-24T02:30:00Z"),                                   # yesterday
        ("d", "2026-11-20T02:30:00Z"),                                   # last week (ISO week 47): newest of it
        ("e", "2026-11-17T02:30:00Z"),                                   # week 47, older: dropped
        ("f", "2026-10-01T02:30:00Z"),                                   # beyond both windows
        ("g", "not a time"),                                             # unreadable: not kept by age
    ]
    assert scheduled_to_keep(sets, keep_daily=2, keep_weekly=2, now=now) == ["b", "c", "d"]
    assert scheduled_to_keep(sets, keep_daily=0, keep_weekly=1, now=now) == ["b"]
    assert scheduled_to_keep(sets, keep_daily=0, keep_weekly=0, now=now) == []
