"""PostgreSQL snapshots with ``pg_dump --format=custom``, checked with ``pg_restore -l``.

Row counts for the manifest are taken inside the very snapshot the dump reads (an exported
snapshot shared with ``pg_dump --snapshot``), while the dump runs, so they describe exactly
what the file holds. Passwords travel in ``PGPASSWORD``, never on a command line, and every
message shows the URL with its password removed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bluegreen.backups.files import fsync_dir, fsync_file
from bluegreen.orchestrator.common.redact import redact_url
from bluegreen.orchestrator.errors import BackupError


class Target:
    """A PostgreSQL database named by URL, split into what libpq tools take without secrets."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = url
        self.shown = redact_url(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = unquote(parts.username or "")
        self.password = unquote(parts.password or "")
        self.dbname = unquote(parts.path.lstrip("/")) or self.user

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
               "PGCONNECT_TIMEOUT": "10"}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self, dbname: str | None = None, autocommit: bool = True) -> Any:
        import psycopg

        try:
            return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password or None,
                                   dbname=dbname or self.dbname, autocommit=autocommit, connect_timeout=10)
        except psycopg.Error as exc:
            raise BackupError(f"cannot connect to {self.shown}: {_first_line(exc)}",
                              "check database.url and that PostgreSQL is running (pg_lsclusters)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tables(conn: Any) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                        "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
    return [(str(s), str(t)) for s, t in rows]


def table_counts(conn: Any) -> dict[str, int]:
    from psycopg import sql

    out = {}
    for schema, table in _tables(conn):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        name = table if schema == "public" else f"{schema}.{table}"
        out[name] = int(conn.execute(query).fetchone()[0])
    return out


def schema_revision(conn: Any) -> str | None:
    import psycopg

    try:
        with conn.transaction():
            row = conn.execute("SELECT max(version) FROM bluegreen_schema_migrations").fetchone()
    except psycopg.Error:
        return None
    return None if row is None or row[0] is None else str(row[0])


def _run(argv: list[str], target: Target) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=target.env(), timeout=3600)
    except FileNotFoundError:
        raise BackupError(f"{argv[0]} is not installed", "apt-get install postgresql-client") from None


def snapshot(url: str, dest: Path, lock_wait_timeout: float = 10.0) -> dict[str, object]:
    """pg_dump the database into ``dest`` (custom format); return what the manifest records."""
    import psycopg

    target = Target(url)
    partial = dest.with_name(dest.name + ".partial")
    conn = target.connect(autocommit=False)
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        exported = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        server_version = str(conn.execute("SHOW server_version").fetchone()[0])
        dump = subprocess.Popen(
            ["pg_dump", "--format=custom", f"--lock-wait-timeout={int(lock_wait_timeout * 1000)}",
             f"--snapshot={exported}", "--no-password", f"--file={partial}", f"--dbname={target.dbname}"],
            env=target.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            counts = table_counts(conn)  # same snapshot as the dump, counted while it runs
            revision = schema_revision(conn)
        finally:
            _out, err = dump.communicate()
        conn.rollback()
    except psycopg.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"snapshot of {target.shown} failed: {_first_line(exc)}") from None
    except FileNotFoundError:
        raise BackupError("pg_dump is not installed", "apt-get install postgresql-client") from None
    finally:
        conn.close()
    if dump.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump of {target.shown} failed: {err.strip().splitlines()[-1] if err.strip() else ''}",
                          "check free space (df -h), locks held on the database, and database.url")
    listed = _run(["pg_restore", "--list", str(partial)], target)
    if listed.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"the dump of {target.shown} does not read back: {listed.stderr.strip()}")
    try:
        os.chmod(partial, 0o600)
        fsync_file(partial)
        os.replace(partial, dest)
        fsync_dir(dest.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"snapshot of {target.shown} failed: {exc}", "check free space (df -h)") from None
    return {"engine": "postgresql", "server_version": server_version, "row_counts": counts,
            "schema_revision": revision, "source": target.shown}


def restore_into(target: Target, dump: Path, dbname: str) -> dict[str, int]:
    admin = target.connect(dbname="postgres")
    try:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        admin.close()
    # Grants on the system catalogue's functions (pg_create_restore_point for the archive's restore
    # points) are in a dump but only a superuser may restore them: everything else is restored.
    listed = _run(["pg_restore", "--list", str(dump)], target)
    if listed.returncode != 0:
        raise BackupError(f"the dump {dump.name} does not read back: {listed.stderr.strip()[:300]}")
    wanted = [line for line in listed.stdout.splitlines() if " ACL pg_catalog " not in line]
    with tempfile.NamedTemporaryFile("w", prefix="bluegreen-restore-", suffix=".list") as items:
        items.write("\n".join(wanted) + "\n")
        items.flush()
        result = _run(["pg_restore", "--no-owner", "--no-password", "--exit-on-error", f"--dbname={dbname}",
                       f"--use-list={items.name}", str(dump)], target)
    if result.returncode != 0:
        raise BackupError(f"pg_restore into {dbname} failed: {result.stderr.strip()[:300]}")
    conn = target.connect(dbname=dbname)
    try:
        return table_counts(conn)
    finally:
        conn.close()


def _drop(target: Target, dbname: str) -> None:
    admin = target.connect(dbname="postgres")
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        admin.close()


def verify_copy(url: str, dump: Path, expected_counts: dict[str, int]) -> list[str]:
    """Restore into a scratch database, compare row counts with the manifest, drop it."""
    target = Target(url)
    scratch = f"bluegreen_verify_{os.getpid()}_{int(time.time())}"
    try:
        counts = restore_into(target, dump, scratch)
    except BackupError as exc:
        return [exc.message]
    finally:
        with contextlib.suppress(BackupError):
            _drop(target, scratch)
    if counts != expected_counts:
        return [f"row counts {counts} differ from the manifest's {expected_counts}"]
    return []


def restore(url: str, dump: Path, expected_counts: dict[str, int]) -> None:
    """Restore into a new database, check it, then swap it in place of the live one."""
    target = Target(url)
    stamp = int(time.time())
    fresh = f"{target.dbname}_restore_{stamp}"
    old = f"{target.dbname}_replaced_{stamp}"
    try:
        counts = restore_into(target, dump, fresh)
    except BackupError:
        with contextlib.suppress(BackupError):
            _drop(target, fresh)
        raise
    if counts != expected_counts:
        _drop(target, fresh)
        raise BackupError(f"the restored copy has row counts {counts}, not the manifest's {expected_counts}")
    import psycopg

    admin = target.connect(dbname="postgres")
    try:
        for attempt in range(50):
            # Open sessions hold the old database; the model servers reconnect to the new one.
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                          " AND pid <> pg_backend_pid()", (target.dbname,))
            try:
                admin.execute(f'ALTER DATABASE "{target.dbname}" RENAME TO "{old}"')
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise BackupError(f"{target.shown} stays in use; the restored copy is kept as {fresh}") from None
                time.sleep(0.1)
        admin.execute(f'ALTER DATABASE "{fresh}" RENAME TO "{target.dbname}"')
        admin.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
    except psycopg.Error as exc:
        raise BackupError(f"swapping in the restored copy of {target.shown} failed: {_first_line(exc)}") from None
    finally:
        admin.close()
