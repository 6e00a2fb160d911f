"""The application database, as the reference server writes it: one row per prediction.

``predictions`` (id, created_at, model_version, variant, features, prediction, score) is created
when missing, in SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://…``). For a regressor
``prediction`` holds the number as text and ``score`` the number itself. ``feedback``
(prediction_id, actual, created_at) holds the true outcome of a prediction when it becomes known
(POST /feedback): the post-release monitor measures live quality from the two.
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
        # A unit of work is ("predict", rows) or ("feedback", (prediction id, actual, time)).
        self._queue: queue.SimpleQueue[tuple[tuple[str, Any], asyncio.AbstractEventLoop,
                                             asyncio.Future[list[int]]] | None] = queue.SimpleQueue()
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
            conn.execute("CREATE TABLE IF NOT EXISTS feedback (prediction_id INTEGER PRIMARY KEY, actual TEXT NOT NULL,"
                         " created_at TEXT NOT NULL)")
            return conn
        import psycopg

        pg = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        pg.execute(
            "CREATE TABLE IF NOT EXISTS predictions (id BIGSERIAL PRIMARY KEY,"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now(), model_version TEXT NOT NULL,"
            " variant TEXT NOT NULL, features TEXT NOT NULL, prediction TEXT NOT NULL, score REAL NOT NULL)"
        )
        pg.execute("CREATE TABLE IF NOT EXISTS feedback (prediction_id BIGINT PRIMARY KEY, actual TEXT NOT NULL,"
                   " created_at TIMESTAMPTZ NOT NULL DEFAULT now())")
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
        return await self._submit(("predict", rows))

    async def feedback(self, prediction_id: int, actual: str, at: str) -> bool:
        """Record the true outcome of a prediction; False when there is no such prediction."""
        if self.kind == "none":
            return False
        return bool((await self._submit(("feedback", (prediction_id, actual, at))))[0])

    async def _submit(self, work: tuple[str, Any]) -> list[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self._queue.put((work, loop, future))
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
                ids = self._write([work for work, _loop, _future in batch])
            except Exception as exc:
                print(f"database write failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                with contextlib.suppress(Exception):
                    self._writer_conn.close()
                self._writer_conn = None  # reconnect for the next batch
                for _rows, loop, future in batch:
                    loop.call_soon_threadsafe(_fail, future, exc)
                continue
            self.batches += 1
            self.rows += sum(len(row_ids) for (work, _l, _f), row_ids in zip(batch, ids, strict=True)
                             if work[0] == "predict")
            for (_rows, loop, future), row_ids in zip(batch, ids, strict=True):
                loop.call_soon_threadsafe(_resolve, future, row_ids)

    def _write(self, batch: list[tuple[str, Any]]) -> list[list[int]]:
        """One transaction for the whole batch; per unit of work, the new ids (or [found] for feedback)."""
        if self._writer_conn is None:
            self._writer_conn = self._connect()
        conn = self._writer_conn
        mark = "?" if self.kind == "sqlite" else "%s"
        insert = (f"INSERT INTO predictions (created_at, model_version, variant, features, prediction, score)"
                  f" VALUES ({', '.join([mark] * 6)})" + ("" if self.kind == "sqlite" else " RETURNING id"))
        exists = f"SELECT 1 FROM predictions WHERE id = {mark}"
        upsert = (f"INSERT INTO feedback (prediction_id, actual, created_at) VALUES ({mark}, {mark}, {mark})"
                  " ON CONFLICT (prediction_id) DO UPDATE SET actual = excluded.actual,"
                  " created_at = excluded.created_at")

        def run(cur: Any) -> list[list[int]]:
            out: list[list[int]] = []
            for kind, work in batch:
                if kind == "predict":
                    ids = []
                    for row in work:
                        done = cur.execute(insert, row)  # sqlite3: a new cursor; psycopg: the same one
                        ids.append(int(done.lastrowid) if self.kind == "sqlite" else int(done.fetchone()[0]))
                    out.append(ids)
                else:
                    prediction_id, actual, at = work
                    found = cur.execute(exists, (prediction_id,)).fetchone() is not None
                    if found:
                        cur.execute(upsert, (prediction_id, actual, at))
                    out.append([int(found)])
            return out

        if self.kind == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = run(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
            return out
        with conn.transaction(), conn.cursor() as cur:
            return run(cur)


def _resolve(future: asyncio.Future[list[int]], ids: list[int]) -> None:
    if not future.done():
        future.set_result(ids)


def _fail(future: asyncio.Future[list[int]], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
