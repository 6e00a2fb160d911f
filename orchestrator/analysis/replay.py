"""Champion against challenger on real requests: recorded traffic replayed to both colours.

The last N requests come from the application database, where the reference server records
every prediction with its features (``predictions.features``), or from a JSON-lines file named
in settings (one ``{"features": [...]}`` per line) for servers that record nothing. Each is sent
as its own request to the candidate and to the live colour, marked as a probe, before any user
traffic reaches the candidate. Classification: the share of rows whose predictions differ;
regression: the mean absolute difference relative to the live predictions' mean magnitude.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.errors import BluegreenError
from bluegreen.orchestrator.model.client import ModelClient
from bluegreen.orchestrator.model.quality import same_label


@dataclass
class ReplayReport:
    source: str
    requests: int
    difference: float  # share disagreeing (classification) or relative mean absolute difference (regression)
    limit: float
    task: str
    seconds: float = 0.0
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.skipped) or self.difference <= self.limit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.skipped:
            return f"replay skipped: {self.skipped}"
        what = "disagree" if self.task == "classification" else "mean absolute difference"
        figure = f"{self.difference:.1%}"
        return f"replay of {self.requests} recorded requests ({self.source}): {figure} {what} (limit {self.limit:.0%})"


def recorded_rows(database_url: str, sqlite_path: Path | None, n: int, width: int | None) -> list[list[float]]:
    """The features of the last ``n`` predictions recorded in the application database, oldest first."""
    if n <= 0 or not database_url:
        return []
    query = "SELECT features FROM predictions ORDER BY id DESC LIMIT %s"
    raw: list[str] = []
    if sqlite_path is not None:
        if not sqlite_path.exists():
            return []
        conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            raw = [r[0] for r in conn.execute(query.replace("%s", "?"), (n,))]
        except sqlite3.Error:
            return []  # no predictions table: nothing recorded yet
        finally:
            conn.close()
    else:
        import psycopg

        try:
            with psycopg.connect(database_url, connect_timeout=5) as pg:
                raw = [r[0] for r in pg.execute(query, (n,)).fetchall()]
        except psycopg.Error:
            return []
    return _rows(reversed(raw), width)


def file_rows(path: Path, n: int, width: int | None) -> list[list[float]]:
    """The last ``n`` requests of a JSON-lines file of {"features": [...]}."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BluegreenError(f"cannot read the replay file {path}: {exc.strerror}",
                             "fix analysis.replay.file   (runbooks/model-contract.md)") from None
    features = []
    for line in lines[-n:] if n else []:
        try:
            features.append(json.dumps(json.loads(line)["features"]))
        except (ValueError, KeyError, TypeError):
            continue
    return _rows(features, width)


def _rows(texts: Any, width: int | None) -> list[list[float]]:
    """Feature rows of the expected width (None: the width of the first usable row)."""
    rows: list[list[float]] = []
    for text in texts:
        try:
            row = [float(v) for v in json.loads(text)]
        except (ValueError, TypeError):
            continue
        if width is None:
            width = len(row)
        if len(row) == width:
            rows.append(row)
    return rows


CONCURRENCY = 8  # requests in flight per colour


def replay(candidate: ModelClient, live: ModelClient, rows: list[list[float]], columns: list[str], task: str,
           limit: float, source: str, budget: float = 5.0) -> ReplayReport:
    """Send every row to both colours, one request per row, several at once; compare the answers.

    Bounded by ``budget`` seconds: a slow server is judged on the rows both colours answered
    in time (its latency is the steps' business, not the replay's).
    """
    if not rows:
        return ReplayReport(source, 0, 0.0, limit, task, skipped=f"no recorded requests in {source}")
    began = time.monotonic()
    deadline = began + budget
    answers: dict[tuple[str, int], Any] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    work = [(name, client, i) for i in range(len(rows)) for name, client in (("c", candidate), ("l", live))]

    def worker() -> None:
        while time.monotonic() < deadline and not errors:
            with lock:
                if not work:
                    return
                name, client, i = work.pop(0)
            try:
                value = client.predict([rows[i]], columns, probe="replay")[0][0]
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                return
            with lock:
                answers[(name, i)] = value

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(2 * CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    done = [i for i in range(len(rows)) if ("c", i) in answers and ("l", i) in answers]
    if not done:
        return ReplayReport(source, 0, 0.0, limit, task, round(time.monotonic() - began, 3),
                            skipped=f"no recorded request was answered by both colours within {budget:g}s")
    cand, base = [answers[("c", i)] for i in done], [answers[("l", i)] for i in done]
    rows = [rows[i] for i in done]
    if task == "classification":
        difference = sum(not same_label(a, b) for a, b in zip(cand, base, strict=True)) / len(rows)
    else:
        mean_abs = sum(abs(float(b)) for b in base) / len(rows) or 1.0
        difference = sum(abs(float(a) - float(b)) for a, b in zip(cand, base, strict=True)) / len(rows) / mean_abs
    return ReplayReport(source, len(rows), difference, limit, task, round(time.monotonic() - began, 3))
