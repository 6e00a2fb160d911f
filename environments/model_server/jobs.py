"""The reference job queue: a table in the application database, and the consumer role that works it.

``jobs`` (id, status, features, prediction, version, attempts, taken_by, taken_at, created_at,
done_at): the API enqueues (``POST /jobs``), a consumer (``ROLE=consumer``) claims jobs in a
short transaction (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN IMMEDIATE``), scores
them, and completes them only while it still holds them (``taken_by`` is its own id). A consumer
that dies holding jobs leaves them ``taken``; after ``JOB_LEASE_SECONDS`` any consumer takes them
again (their attempts count says so). On SIGTERM a consumer takes nothing more, finishes what it
holds, and exits 0: no job is lost or done twice across a switch of consumers.

The queue table is made by the API (``POST /jobs`` needs it); a consumer whose table is missing
says so and exits 1, so a release with a missing queue fails instead of idling.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HEARTBEAT = Path(os.environ.get("CONSUMER_HEARTBEAT", "/tmp/consumer-heartbeat"))

SQLITE_TABLE = ("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL, "
                "features TEXT NOT NULL, prediction TEXT, version TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
                "taken_by TEXT, taken_at REAL, created_at REAL NOT NULL, done_at REAL)")
PG_TABLE = ("CREATE TABLE IF NOT EXISTS jobs (id BIGSERIAL PRIMARY KEY, status TEXT NOT NULL, "
            "features TEXT NOT NULL, prediction TEXT, version TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
            "taken_by TEXT, taken_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL, "
            "done_at DOUBLE PRECISION)")


class Queue:
    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "sqlite" if url.startswith("sqlite:///") else "postgresql"
        self._lock = threading.Lock()
        self.conn: Any = None

    def connect(self, create: bool = False) -> Queue:
        if self.kind == "sqlite":
            path = self.url[len("sqlite:///"):]
            self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.conn.execute("PRAGMA journal_mode=WAL")
        else:
            import psycopg

            self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        if create:
            self.conn.execute(SQLITE_TABLE if self.kind == "sqlite" else PG_TABLE)
        return self

    def _q(self, sql: str) -> str:
        return sql if self.kind == "sqlite" else sql.replace("?", "%s")

    def enqueue(self, features: list[Any]) -> int:
        with self._lock:
            row = self.conn.execute(self._q("INSERT INTO jobs (status, features, created_at) VALUES ('queued', ?, ?) "
                                            "RETURNING id"), (json.dumps(features), time.time())).fetchone()
        return int(row[0])

    def get(self, job_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self.conn.execute(self._q("SELECT id, status, prediction, version, attempts FROM jobs WHERE id = ?"),
                                    (job_id,)).fetchone()
        if row is None:
            return None
        status = "queued" if row[1] == "taken" else row[1]  # taken is still queued to the caller
        return {"id": row[0], "status": status, "prediction": json.loads(row[2]) if row[2] else None,
                "version": row[3], "attempts": row[4]}

    def claim(self, me: str, batch: int, lease: float) -> list[tuple[int, list[Any]]]:
        now = time.time()
        if self.kind == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                rows = self.conn.execute(
                    "SELECT id, features FROM jobs WHERE status = 'queued' OR (status = 'taken' AND taken_at < ?) "
                    "ORDER BY id LIMIT ?", (now - lease, batch)).fetchall()
                if rows:
                    marks = ",".join("?" * len(rows))
                    ids = [r[0] for r in rows]
                    self.conn.execute(f"UPDATE jobs SET status = 'taken', taken_by = ?, taken_at = ?, "
                                      f"attempts = attempts + 1 WHERE id IN ({marks})", (me, now, *ids))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        else:
            rows = self.conn.execute(
                "UPDATE jobs SET status = 'taken', taken_by = %s, taken_at = %s, attempts = attempts + 1 "
                "WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' OR (status = 'taken' AND taken_at < %s) "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, features",
                (me, now, now - lease, batch)).fetchall()
        return sorted((int(r[0]), json.loads(r[1])) for r in rows)

    def complete(self, me: str, done: list[tuple[int, str]], version: str) -> int:
        """Mark jobs done, only those this consumer still holds; how many were."""
        now = time.time()
        count = 0
        if self.kind == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
        for job_id, prediction in done:
            cur = self.conn.execute(self._q("UPDATE jobs SET status = 'done', prediction = ?, version = ?, done_at = ? "
                                            "WHERE id = ? AND taken_by = ? AND status = 'taken'"),
                                    (prediction, version, now, job_id, me))
            count += cur.rowcount
        if self.kind == "sqlite":
            self.conn.execute("COMMIT")
        return count


def consume(cfg: dict[str, Any], model: Any) -> int:
    """The consumer role: claim, score, complete, until SIGTERM; then finish what is held and exit."""
    url = cfg["database_url"]
    if not url:
        print("ROLE=consumer needs DATABASE_URL (the queue is a table in the application database)", file=sys.stderr)
        return 2
    me = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    lease = float(os.environ.get("JOB_LEASE_SECONDS", "30"))
    batch = int(os.environ.get("JOB_BATCH", "20"))
    work = float(os.environ.get("FAULT_JOB_WORK_MS", "0")) / 1000  # slow scoring, to hold jobs a while (tests)
    # Never healthy (its heartbeat is not written): "1"/"true", or this consumer's version.
    unhealthy = os.environ.get("FAULT_UNHEALTHY", "").lower() in ("1", "true", "yes", str(cfg["version"]).lower())
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        queue = Queue(url).connect()
        queue.conn.execute("SELECT 1 FROM jobs LIMIT 1")
    except Exception as exc:
        print(f"consumer cannot use the queue table 'jobs': {type(exc).__name__}: {exc} (the API creates it: start "
              "the api service first)", file=sys.stderr)
        return 1
    print(f"consumer {me} of model {cfg['version']} taking jobs (batch {batch}, lease {lease:g}s)", file=sys.stderr)
    done_total = 0
    while not stopping.is_set():
        if not unhealthy:
            HEARTBEAT.write_text(str(time.time()))
        held = queue.claim(me, batch, lease)
        if not held:
            stopping.wait(0.02)
            continue
        preds = model.predict([features for _id, features in held])
        if work:
            time.sleep(work)
        results = [(job_id, json.dumps(p.label if p.label is not None else p.value))
                   for (job_id, _f), p in zip(held, preds, strict=True)]
        done_total += queue.complete(me, results, cfg["version"])
    print(f"consumer {me} stopping: {done_total} jobs done, none held", file=sys.stderr)
    return 0


def healthy(max_age: float = 10.0) -> int:
    """The consumer's health check (compose healthcheck): its loop ran within ``max_age`` seconds."""
    try:
        age = time.time() - float(HEARTBEAT.read_text())
    except (OSError, ValueError):
        return 1
    return 0 if age <= max_age else 1
