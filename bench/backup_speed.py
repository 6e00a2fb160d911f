"""Benchmark: snapshot speed against the plain tools, measured in the same run.

- SQLite: a database of --sqlite-mb MB (default 600); a plain file copy (with fsync) against
  bluegreen's snapshot (online backup API in one step, journal mode switch, integrity check,
  row counts, fsync, rename). Ratio = copy time / snapshot time (target >= 0.5).
- PostgreSQL: a database of --pg-rows rows; a bare ``pg_dump -Fc`` against bluegreen's snapshot
  (pg_dump on an exported snapshot, row counts in the same snapshot, ``pg_restore -l``, fsync).
  Ratio = snapshot time / pg_dump time (target <= 1.1).

Prints figures; asserts nothing.  python3 bench/backup_speed.py [--sqlite-mb 600] [--pg-rows 2000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen.backups import postgres, sqlite  # noqa: E402
from bluegreen.backups.files import fsync_file  # noqa: E402

PG_ADMIN = os.environ.get("BLUEGREEN_TEST_PG", "postgresql://bluegreen:bluegreen@127.0.0.1:5432/postgres")


def timed(fn, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_sqlite(mb: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-", dir="/var/tmp") as tmp:
        db = Path(tmp) / "app.db"
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        conn.execute("BEGIN")
        conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                     "INSERT INTO predictions (payload) SELECT randomblob(1000) FROM n", (mb * 1000,))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        size = db.stat().st_size

        def copy() -> None:
            shutil.copyfile(db, Path(tmp) / "copy.db")
            fsync_file(Path(tmp) / "copy.db")

        def snap() -> None:
            sqlite.snapshot(db, Path(tmp) / "snap.db")

        copies, snaps = [], []
        for _ in range(runs):  # interleaved, so both see the same page cache and disk state
            copies += timed(copy, 1)
            snaps += timed(snap, 1)
        c, s = statistics.median(copies), statistics.median(snaps)
        print(f"SQLite {size / 1e6:.0f} MB: plain copy median {c:.2f}s ({size / 1e6 / c:.0f} MB/s), "
              f"snapshot median {s:.2f}s ({size / 1e6 / s:.0f} MB/s); copy/snapshot = {c / s:.2f} (n={runs})")


def bench_postgres(rows: int, runs: int) -> None:
    import psycopg

    name = "bench_backup_speed"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE predictions (id BIGSERIAL PRIMARY KEY, model_version TEXT, "
                         "features TEXT, prediction TEXT, score REAL)")
            conn.execute("INSERT INTO predictions (model_version, features, prediction, score) "
                         "SELECT 'v1', md5(g::text) || md5((g * 7)::text), 'setosa', random() "
                         "FROM generate_series(1, %s) g", (rows,))
            conn.execute("VACUUM ANALYZE predictions")
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        target = postgres.Target(url)
        with tempfile.TemporaryDirectory(prefix="bench-pg-", dir="/var/tmp") as tmp:
            def bare() -> None:
                subprocess.run(["pg_dump", "--format=custom", f"--file={tmp}/bare.dump", f"--dbname={name}"],
                               env=target.env(), check=True)

            def snap() -> None:
                postgres.snapshot(url, Path(tmp) / "snap.dump")

            bares, snaps = [], []
            for _ in range(runs):
                bares += timed(bare, 1)
                snaps += timed(snap, 1)
        b, s = statistics.median(bares), statistics.median(snaps)
        print(f"PostgreSQL {rows} rows ({size / 1e6:.0f} MB): bare pg_dump -Fc median {b:.2f}s, "
              f"snapshot median {s:.2f}s; snapshot/pg_dump = {s / b:.2f} (n={runs})")
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite-mb", type=int, default=600)
    parser.add_argument("--pg-rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bench_sqlite(args.sqlite_mb, args.runs)
    bench_postgres(args.pg_rows, args.runs)


if __name__ == "__main__":
    main()
