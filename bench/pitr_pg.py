"""Benchmark: a release's restore point with pgBackRest against a full backup set (pg_dump), at two
database sizes; the time to restore to a point; the recovery point objective after a kill -9.

For each size (--sizes, MB): a PostgreSQL cluster of its own (initdb, its own port, archive_mode
on, archive_command to pgBackRest as `bluegreen up` prints it), filled with pgbench's tables to
about that size, the stanza made and its first full backup taken by bluegreen's own PgBackRest
class. Then, while a writer commits a row every 10 ms, timed: the full set's database snapshot
(`BackupStore.create`, today's pre-release step), a restore point (named point, WAL switch, waited
for until archived), and a restore to that point: the cluster rebuilt in scratch and replayed to
the point (`scratch`), and the application database copied out of it into a new database.
RPO (smallest size): with archive_timeout = 5 s, the writer runs, PostgreSQL is SIGKILLed, and the
cluster is restored from the archive alone (end of the archive): rows committed against rows back.
Prints; asserts nothing.

    python3 bench/pitr_pg.py [--sizes 100,2000] [--runs 3]     (as root; needs pgbackrest, postgresql)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen.backups import postgres  # noqa: E402
from bluegreen.backups.pgbackrest import PgBackRest  # noqa: E402
from bluegreen.backups.sets import BackupStore, Sources  # noqa: E402
from bluegreen.orchestrator.common.ports import free_ports  # noqa: E402
from tests.pgcluster import Cluster  # noqa: E402

MB_PER_SCALE = 15.0  # pgbench: one scale unit is about 15 MB of tables and indexes


class Writer:
    """Commits a marker row every 10 ms until stopped; counts the commits that returned."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.committed = 0
        self.last_commit = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.wait(0.01):
                    conn.execute("INSERT INTO markers (at) VALUES (%s)", (time.time(),))
                    self.committed += 1
                    self.last_commit = time.time()
        except psycopg.Error:
            pass  # the server was killed under it (the RPO run)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms (min {min(samples) * 1000:.0f}, max {max(samples) * 1000:.0f})"


def setup(megabytes: int, archive_timeout: float) -> tuple[Cluster, PgBackRest, float, float]:
    cluster = Cluster(free_ports(1)[0]).create()
    try:
        return _fill(cluster, megabytes, archive_timeout)
    except BaseException:
        cluster.remove()
        raise


def _fill(cluster: Cluster, megabytes: int, archive_timeout: float) -> tuple[Cluster, PgBackRest, float, float]:
    archive = PgBackRest(cluster.url, cluster.pgbackrest_dir, "app", cluster.data, str(cluster.socket),
                         archive_timeout=archive_timeout)
    archive._write_config()  # as `bluegreen up` does before it asks for the lines
    with cluster.conf.open("a") as conf:
        conf.write("\n".join(archive.required_lines()) + "\nmax_wal_size = 4GB\n")
    cluster.restart()
    scale = max(1, round(megabytes / MB_PER_SCALE))
    cluster._as_postgres("pgbench", "-i", "-q", "-I", "dtGvp", "-s", str(scale), "-h", str(cluster.socket), "-p",
                         str(cluster.port), "app", timeout=3600)
    cluster.sql("CREATE TABLE markers (id bigserial PRIMARY KEY, at double precision NOT NULL); "
                "ALTER TABLE markers OWNER TO app; GRANT ALL ON ALL TABLES IN SCHEMA public TO app", "app")
    # The fast path: bluegreen's own connection may make restore points (runbooks/pitr.md).
    cluster.sql("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO app", "app")
    size = int(cluster.sql("SELECT pg_database_size('app')")[0]) / (1 << 20)
    t0 = time.monotonic()
    archive.start()  # stanza-create, check, the first full backup
    return cluster, archive, size, time.monotonic() - t0


def run_size(root: Path, megabytes: int, runs: int) -> dict[str, object]:
    cluster, archive, size, first_backup = setup(megabytes, 60.0)
    store = BackupStore(root / f"sets-{megabytes}", Sources(database_url=cluster.url, sqlite_path=None,
                                                             config_files={}, lock_wait_timeout=10.0))
    live = postgres.Target(cluster.url)
    writer = Writer(cluster.url)
    full, point, rebuild, copy_out = [], [], [], []
    try:
        for i in range(runs):
            t0 = time.monotonic()
            backup = store.create(reason="bench", kind="manual")
            full.append(time.monotonic() - t0)
            t0 = time.monotonic()
            rp = archive.restore_point(f"bench-{i}")
            point.append(time.monotonic() - t0)
            with archive.scratch(name=rp.name, lsn=rp.lsn) as server, \
                    tempfile.TemporaryDirectory(prefix="bench-pitr-pg-") as tmp:
                rebuild.append(server.seconds)
                t0 = time.monotonic()
                postgres.snapshot(server.url, Path(tmp) / "db.dump")
                postgres.restore_into(live, Path(tmp) / "db.dump", f"copy_{i}")
                copy_out.append(time.monotonic() - t0)
            cluster.sql(f"DROP DATABASE copy_{i}")
            import shutil

            shutil.rmtree(backup.path)
    finally:
        writer.close()
        cluster.remove()
    return {"mb": size, "first_backup_s": first_backup, "full": full, "point": point, "rebuild": rebuild,
            "copy_out": copy_out}


def rpo(archive_timeout: float) -> dict[str, float]:
    cluster, archive, _size, _first = setup(20, archive_timeout)
    try:
        writer = Writer(cluster.url)
        time.sleep(archive_timeout * 2.5)  # several archive_timeout switches behind it
        pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)  # the postmaster; its backends die with it
        writer.close()
        with archive.scratch() as server:  # the archive alone: the end of what was archived
            conn = postgres.Target(server.url).connect()
            try:
                back, newest = conn.execute("SELECT count(*), max(at) FROM markers").fetchone()
            finally:
                conn.close()
        return {"committed": writer.committed, "back": back, "lost_s": killed_at - (newest or killed_at),
                "rebuild_s": server.seconds}
    finally:
        cluster.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,2000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--archive-timeout", type=float, default=5.0, help="for the RPO run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pitr-pg-", dir=os.environ.get("BENCH_DIR")) as tmp:
        for mb in (int(s) for s in args.sizes.split(",")):
            rows.append(run_size(Path(tmp), mb, args.runs))
    lost = rpo(args.archive_timeout)
    print(f"a writer commits a row every 10 ms throughout; {args.runs} runs per size; medians")
    for r in rows:
        print(f"{r['mb']:.0f} MB: full set (pg_dump) {median_ms(r['full'])}; "  # type: ignore[arg-type]
              f"restore point (named point + WAL switch, archived) {median_ms(r['point'])}")  # type: ignore[arg-type]
        print(f"   restore to that point: cluster rebuilt and replayed in scratch "
              f"{median_ms(r['rebuild'])}, database copied out into a new one "  # type: ignore[arg-type]
              f"{median_ms(r['copy_out'])}")  # type: ignore[arg-type]
        print(f"   the stanza's first full backup (once, at bluegreen up): {r['first_backup_s']:.1f} s")
    if len(rows) == 2:
        small, big = rows
        for key in ("full", "point", "rebuild"):
            ratio = statistics.median(big[key]) / statistics.median(small[key])  # type: ignore[arg-type]
            print(f"{key}: {big['mb']:.0f} MB / {small['mb']:.0f} MB time ratio {ratio:.1f}")
    print(f"RPO with archive_timeout = {args.archive_timeout:g} s: {lost['committed']:.0f} rows committed, "
          f"PostgreSQL SIGKILLed, {lost['back']:.0f} back from the archive alone; the newest row back was "
          f"committed {lost['lost_s']:.1f} s before the kill (rebuild {lost['rebuild_s']:.1f} s)")


if __name__ == "__main__":
    main()
