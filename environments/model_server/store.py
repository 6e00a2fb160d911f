"""The application database, as the reference server writes it: one row per prediction.

``predictions`` (id, created_at, model_version, variant, features, prediction, score) is created
when missing, in SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://…``). For a regressor
``prediction`` holds the number as text and ``score`` the number itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str, str, float]  # created_at, version, variant, features, prediction, score


class PredictionStore:
    """Records predictions; one writer thread group-commits what every request hands it.

    A request waits until its rows are committed (its answer carries their ids), but it never
    queues behind other requests' transactions one by one: rows that arrive while a commit runs
    all go into the next transaction. ``ping`` uses its own connection, so a health check never
    waits for a write.
    """

    MAX_BATCH = 1000

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "none" if not url else ("sqlite" if url.startswith("sqlite:///") else "postgresql")
        self._queue: queue.SimpleQueue[tuple[list[Row], asyncio.AbstractEventLoop, asyncio.Future[list[int]]]
                                       | None] = queue.SimpleQueue()
        self._writer_conn: Any = None
        self._ping_conn: Any = None
        self._ping_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="prediction-writer", daemon=True)
        self.batches = 0
        self.rows = 0

    # connections
    def _connect(self) -> Any:
        if self.kind == "sqlite":
            path = self.url[len("sqlite:///") :]  # sqlite:////abs/path or sqlite:///relative/path
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS predictions (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " created_at TEXT NOT NULL, model_version TEXT NOT NULL, variant TEXT NOT NULL,"
                " features TEXT NOT NULL, prediction TEXT NOT NULL, score REAL NOT NULL)"
            )
            return conn
        import psycopg

        pg = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        pg.execute(
            "CREATE TABLE IF NOT EXISTS predictions (id BIGSERIAL PRIMARY KEY,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), model_version TEXT NOT NULL,"
            " variant TEXT NOT NULL, features TEXT NOT NULL, prediction TEXT NOT NULL, score REAL NOT NULL)"
        )
        return pg

    def open(self) -> None:
        """Connect (a database that cannot be reached stops the start) and start the writer."""
        if self.kind != "none":
            self._writer_conn = self._connect()
            self._ping_conn = self._connect()
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout)

    def ping(self) -> bool:
        if self.kind == "none":
            return True
        with self._ping_lock:
            try:
                if self._ping_conn is None:
                    self._ping_conn = self._connect()
                self._ping_conn.execute("SELECT 1")
                return True
            except Exception:
                # Health answers 503 until the database is back; the next ping reconnects.
                with contextlib.suppress(Exception):
                    self._ping_conn.close()
                self._ping_conn = None
                return False

    # writes
    async def record(self, rows: list[Row]) -> list[int]:
        if self.kind == "none":
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._queue.put((rows, loop, future))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                ids = self._write([rows for rows, _loop, _future in batch])
            except Exception as exc:
                print(f"database write failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                with contextlib.suppress(Exception):
                    self._writer_conn.close()
                self._writer_conn = None  # reconnect for the next batch
                for _rows, loop, future in batch:
                    loop.call_soon_threadsafe(_fail, future, exc)
                continue
            self.batches += 1
            self.rows += sum(len(r) for r in ids)
            for (_rows, loop, future), row_ids in zip(batch, ids, strict=True):
                loop.call_soon_threadsafe(_resolve, future, row_ids)

    def _write(self, requests: list[list[Row]]) -> list[list[int]]:
        if self._writer_conn is None:
            self._writer_conn = self._connect()
        conn = self._writer_conn
        out: list[list[int]] = []
        if self.kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                for rows in requests:
                    ids = []
                    for row in rows:
                        cur = conn.execute(
                            "INSERT INTO predictions (created_at, model_version, variant, features, prediction,"
                            " score) VALUES (?, ?, ?, ?, ?, ?)", row)
                        ids.append(int(cur.lastrowid))
                    out.append(ids)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
            return out
        with conn.transaction(), conn.cursor() as cur:
            for rows in requests:
                ids = []
                for row in rows:
                    cur.execute(
                        "INSERT INTO predictions (created_at, model_version, variant, features, prediction, score)"
                        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id", row)
                    ids.append(int(cur.fetchone()[0]))
                out.append(ids)
        return out


def _resolve(future: asyncio.Future[list[int]], ids: list[int]) -> None:
    if not future.done():
        future.set_result(ids)


def _fail(future: asyncio.Future[list[int]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
