"""Schema migrations shipped with a release: ``NNNN_name.up.sql`` / ``NNNN_name.down.sql`` files.

Each migration runs in one transaction with its bookkeeping row in
``bluegreen_schema_migrations`` (SQLite and PostgreSQL both have transactional DDL), so a
migration is either applied and recorded, or neither.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.errors import InvalidRequest, ReleaseFailed

FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")
TABLE = "bluegreen_schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    up: str
    down: str | None


def load(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, in version order; refuse misnamed or incomplete ones."""
    if not directory.is_dir():
        raise InvalidRequest(f"migrations directory {directory} does not exist", "pass --migrations DIR")
    ups: dict[str, tuple[str, str]] = {}
    downs: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        match = FILENAME.match(path.name)
        if not match:
            raise InvalidRequest(f"{path.name} is not a migration file name",
                                 "name them NNNN_name.up.sql and NNNN_name.down.sql")
        version, name, direction = match.groups()
        if direction == "up":
            if version in ups:
                raise InvalidRequest(f"two migrations are numbered {version} in {directory}")
            ups[version] = (name, path.read_text())
        else:
            downs[version] = path.read_text()
    orphans = sorted(set(downs) - set(ups))
    if orphans:
        raise InvalidRequest(f"down migrations without an up: {', '.join(orphans)}")
    return [Migration(v, ups[v][0], ups[v][1], downs.get(v)) for v in sorted(ups)]


class SchemaDatabase:
    """The application database, for migrations: SQLite file or PostgreSQL URL."""

    def __init__(self, url: str, sqlite_path: Path | None) -> None:
        self.url = url
        self.sqlite_path = sqlite_path

    def _sqlite(self) -> sqlite3.Connection:
        assert self.sqlite_path is not None
        conn = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _pg(self) -> Any:
        from bluegreen.backups.postgres import Target

        return Target(self.url).connect()

    def applied(self) -> list[str]:
        create = f"CREATE TABLE IF NOT EXISTS {TABLE} (version TEXT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT)"
        if self.sqlite_path is not None:
            conn = self._sqlite()
            try:
                conn.execute(create)
                return [r[0] for r in conn.execute(f"SELECT version FROM {TABLE} ORDER BY version")]
            finally:
                conn.close()
        pg = self._pg()
        try:
            pg.execute(create)
            return [str(r[0]) for r in pg.execute(f"SELECT version FROM {TABLE} ORDER BY version").fetchall()]
        finally:
            pg.close()

    def run(self, migration: Migration, direction: str) -> None:
        """Apply (``up``) or revert (``down``) one migration and its bookkeeping, atomically."""
        sql = migration.up if direction == "up" else migration.down
        assert sql is not None
        params: tuple[str, ...]
        if direction == "up":
            record = f"INSERT INTO {TABLE} (version, name, applied_at) VALUES (?, ?, datetime('now'))"
            params = (migration.version, migration.name)
        else:
            record, params = f"DELETE FROM {TABLE} WHERE version = ?", (migration.version,)
        where = f"migration {migration.version}_{migration.name} ({direction})"
        if self.sqlite_path is not None:
            conn = self._sqlite()
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(record, params)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise ReleaseFailed(f"{where} failed: {exc}") from None
            finally:
                conn.close()
            return
        import psycopg

        pg = self._pg()
        try:
            with pg.transaction():
                pg.execute(sql)
                pg.execute(record.replace("?", "%s").replace("datetime('now')", "now()::text"), params)
        except psycopg.Error as exc:
            raise ReleaseFailed(f"{where} failed: {str(exc).strip().splitlines()[0]}") from None
        finally:
            pg.close()


def _statements(sql: str) -> list[str]:
    """Split a script on semicolons at line ends (sqlite3 executes one statement at a time)."""
    parts = [p.strip() for p in re.split(r";\s*(?:\n|$)", sql)]
    return [p for p in parts if p and not all(line.strip().startswith("--") for line in p.splitlines())]


def pending(db: SchemaDatabase, migrations: list[Migration]) -> list[Migration]:
    done = set(db.applied())
    return [m for m in migrations if m.version not in done]
