"""The state database: which colour is live, what runs in each, the weights, and the audit log.

A small SQLite file in the state directory. Every write is one transaction
(``BEGIN IMMEDIATE``), so a crash leaves either the old or the new state, never half of one.
The audit log has a row per action (who, when, what, outcome); the row is written when the
action starts and completed when it ends, so an action cut short shows as ``running``.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.errors import BluegreenError, StateError

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS environments (
    color TEXT PRIMARY KEY CHECK (color IN ('blue', 'green')),
    image TEXT NOT NULL,
    version TEXT NOT NULL,
    container_id TEXT NOT NULL,
    port INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    outcome TEXT NOT NULL DEFAULT 'running',
    detail TEXT NOT NULL DEFAULT '',
    duration_s REAL
);
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    actor TEXT NOT NULL,
    image TEXT NOT NULL,
    version TEXT NOT NULL,
    env TEXT NOT NULL DEFAULT '{}',
    from_color TEXT NOT NULL,
    to_color TEXT NOT NULL,
    from_image TEXT,
    from_version TEXT,
    from_env TEXT NOT NULL DEFAULT '{}',
    plan TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    step TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    request TEXT,
    requested_by TEXT,
    pid INTEGER,
    duration_s REAL
);
CREATE TABLE IF NOT EXISTS release_steps (
    release_id INTEGER NOT NULL REFERENCES releases(id),
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT NOT NULL DEFAULT 'started',
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (release_id, seq)
);
-- /metrics finds the newest release of a kind, the first one still running and the alerts written since
-- its last scrape at every scrape: through these, not through every row.
CREATE INDEX IF NOT EXISTS releases_by_kind ON releases (kind, status);
CREATE INDEX IF NOT EXISTS releases_running ON releases (id) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS audit_by_action ON audit (action);
"""


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a state database written by an earlier bluegreen up to the current tables."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(environments)")}
    if "env" not in columns:
        conn.execute("ALTER TABLE environments ADD COLUMN env TEXT NOT NULL DEFAULT '{}'")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def default_actor() -> str:
    """Who is acting: $BLUEGREEN_ACTOR (automation sets it), else user@host."""
    explicit = os.environ.get("BLUEGREEN_ACTOR")
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class EnvironmentRecord:
    color: str
    image: str
    version: str
    container_id: str
    port: int
    updated_at: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class AuditEntry:
    id: int
    started_at: str
    actor: str
    action: str
    args: dict[str, Any]
    outcome: str = "running"
    detail: str = ""
    finished_at: str | None = None
    duration_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("notes")
        return d


class StateStore:
    """One connection to the state database, safe to share between the threads of one process.

    Each use of the connection (a query, or a whole transaction) holds the store's lock, so a
    long-running process (``serve``) can share one store between its request and scheduler threads.
    The file is never opened by anything but SQLite: closing a second descriptor on it would drop
    the POSIX locks SQLite holds through the first, and another process could then write over a
    transaction in progress (the documented way to corrupt a SQLite file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    @property
    def conn(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            # The journal holds release settings (which may include credentials): owner only. The
            # directory is 0700 already; the file is made 0600 once SQLite has created it.
            private_dir(self.path.parent)
            created = not self.path.exists()
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            if created or self.path.stat().st_mode & 0o077:
                os.chmod(self.path, 0o600)
            # Tables are created or migrated once per file (user_version records it), so opening a store
            # never waits for another's write transaction.
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                try:
                    conn.executescript("BEGIN IMMEDIATE;" + SCHEMA)
                    _migrate(conn)
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"cannot open the state database {self.path}: {exc}") from None
        return conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StateError(f"state database write failed: {exc}") from None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"state database read failed: {exc}") from None

    # -- live colour and weights -------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def live_color(self) -> str | None:
        return self._meta("live_color")

    def weights(self) -> dict[str, int]:
        raw = self._meta("weights")
        return json.loads(raw) if raw else {}

    def set_live(self, color: str, weights: dict[str, int]) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('live_color', ?)", (color,))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('weights', ?)", (json.dumps(weights),))

    def switch_live(self, color: str, weights: dict[str, int], previous: dict[str, Any] | None,
                    warm: dict[str, Any] | None) -> None:
        """One transaction: the live colour, the one it replaced, and how long that stays warm (None: none)."""
        with self.transaction() as conn:
            for key, value in (("live_color", color), ("weights", json.dumps(weights)),
                               ("previous", None if previous is None else json.dumps(previous)),
                               ("warm", None if warm is None else json.dumps(warm))):
                if value is None:
                    conn.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- environments ------------------------------------------------------------------------
    def environment(self, color: str) -> EnvironmentRecord | None:
        rows = self.query("SELECT * FROM environments WHERE color = ?", (color,))
        if not rows:
            return None
        row = dict(rows[0])
        row["env"] = json.loads(row["env"] or "{}")
        return EnvironmentRecord(**row)

    def record_environment(self, color: str, image: str, version: str, container_id: str, port: int,
                           env: dict[str, str] | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO environments (color, image, version, container_id, port, updated_at, env)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (color, image, version, container_id, port, now(), json.dumps(env or {})),
            )

    def forget_environment(self, color: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM environments WHERE color = ?", (color,))

    # -- small JSON documents: the warm standby and the previous live environment ---------------
    def get_doc(self, key: str) -> dict[str, Any] | None:
        raw = self._meta(key)
        return json.loads(raw) if raw else None

    def set_doc(self, key: str, doc: dict[str, Any] | None) -> None:
        with self.transaction() as conn:
            if doc is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(doc)))

    # -- audit log ---------------------------------------------------------------------------
    @contextmanager
    def action(self, actor: str, action: str, args: dict[str, Any] | None = None) -> Iterator[AuditEntry]:
        """Record an action: a ``running`` row now, its outcome and duration when the block ends."""
        entry = AuditEntry(id=0, started_at=now(), actor=actor, action=action, args=args or {})
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO audit (started_at, actor, action, args) VALUES (?, ?, ?, ?)",
                (entry.started_at, actor, action, json.dumps(entry.args)),
            )
            entry.id = int(cur.lastrowid or 0)
        start = time.monotonic()
        outcome, detail = "ok", ""
        try:
            yield entry
        except BluegreenError as exc:
            outcome, detail = "failed", exc.message
            raise
        except KeyboardInterrupt:
            outcome, detail = "interrupted", "interrupted by the operator"
            raise
        except BaseException as exc:
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            notes = "; ".join(entry.notes)
            detail = "; ".join(part for part in (notes, detail) if part)
            with self.transaction() as conn:
                conn.execute(
                    "UPDATE audit SET finished_at = ?, outcome = ?, detail = ?, duration_s = ? WHERE id = ?",
                    (now(), outcome, detail, round(time.monotonic() - start, 3), entry.id),
                )

    def history(self, limit: int = 50) -> list[AuditEntry]:
        rows = self.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [
            AuditEntry(id=r["id"], started_at=r["started_at"], actor=r["actor"], action=r["action"],
                       args=json.loads(r["args"]), outcome=r["outcome"], detail=r["detail"],
                       finished_at=r["finished_at"], duration_s=r["duration_s"])
            for r in rows
        ]
