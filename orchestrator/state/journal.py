"""The release journal: every release and rollback, and each of its steps, written before it acts.

A step's row is inserted (outcome ``started``) before the step touches anything and completed
after, so after a crash the journal says exactly how far a release got. Requests from other
processes (abort, promote, approve) are written to the release's row and read by the running
release; an approval is taken (cleared) once it has answered the check that waited for it.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.state.store import StateStore, now

RUNNING = "running"
BASELINE = "baseline"  # MODEL_VARIANT of the rules-based fallback a rollback can go to
FINISHED = ("promoted", "rolled_back", "failed", "aborted", "recovered", "switched", "failed_over", "transient",
            "passed")


def variant(env: dict[str, str]) -> str:
    """The model variant a container with this environment serves: "model", or its MODEL_VARIANT."""
    return env.get("MODEL_VARIANT") or "model"


def epoch(stamp: str) -> float:
    """A journal time (UTC, to the second) as seconds since the epoch."""
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


# The rows after which a version took all traffic: a release that promoted (or kept, after a crash) a
# version in the other colour; a rollback; an automatic failover. A worker's release moves no traffic.
_PROMOTED = "kind = 'release' AND status IN ('promoted', 'recovered') AND from_color != to_color"
_MOVED = (f"({_PROMOTED}) OR (kind = 'rollback' AND status IN ('switched', 'recovered'))"
          " OR (kind = 'failover' AND status = 'failed_over')")


@dataclass
class StepRecord:
    seq: int
    name: str
    started_at: str
    finished_at: str | None
    outcome: str
    detail: dict[str, Any]


@dataclass
class ReleaseRecord:
    id: int
    kind: str  # release | rollback
    started_at: str
    finished_at: str | None
    actor: str
    image: str
    version: str
    env: dict[str, str]
    from_color: str
    to_color: str
    from_image: str | None
    from_version: str | None
    from_env: dict[str, str]
    plan: dict[str, Any]
    status: str
    step: str
    reason: str
    request: str | None
    requested_by: str | None
    pid: int | None
    duration_s: float | None
    steps: list[StepRecord] = field(default_factory=list)

    def step_done(self, name: str) -> bool:
        return any(s.name == name and s.outcome == "done" for s in self.steps)

    def find_step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)

    def awaiting(self) -> dict[str, Any] | None:
        """The approval check the release waits on now (check, until, on_timeout), or None."""
        for step in self.steps:
            if step.outcome == "started" and step.detail.get("awaiting_approval"):
                return dict(step.detail["awaiting_approval"], step=step.name)
        return None

    def check_results(self) -> list[dict[str, Any]]:
        """The results of the team's checks so far, each with the step it ran in."""
        return [{**result, "step": step.name} for step in self.steps for result in step.detail.get("checks") or []]

    def approval_by(self, who: str) -> dict[str, Any] | None:
        """The last approval check ``who`` approved in this release, or None."""
        return next((c for c in reversed(self.check_results()) if c["kind"] == "approval" and c["ok"]
                     and c["by"] == who), None)

    def to_dict(self, secrets: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not secrets:  # environment values may hold credentials: show only their names
            d["env"] = sorted(self.env)
            d["from_env"] = sorted(self.from_env)
        return d


class Journal:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def begin(self, kind: str, actor: str, image: str, version: str, env: dict[str, str], from_color: str,
              to_color: str, from_image: str | None, from_version: str | None, from_env: dict[str, str],
              plan: dict[str, Any]) -> int:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO releases (kind, started_at, actor, image, version, env, from_color, to_color,"
                " from_image, from_version, from_env, plan, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, now(), actor, image, version, json.dumps(env), from_color, to_color, from_image,
                 from_version, json.dumps(from_env), json.dumps(plan), os.getpid()),
            )
            return int(cur.lastrowid or 0)

    def step_started(self, release_id: int, seq: int, name: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO release_steps (release_id, seq, name, started_at)"
                         " VALUES (?, ?, ?, ?)", (release_id, seq, name, now()))
            conn.execute("UPDATE releases SET step = ? WHERE id = ?", (name, release_id))

    def step_finished(self, release_id: int, seq: int, outcome: str, detail: dict[str, Any] | None = None) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE release_steps SET finished_at = ?, outcome = ?, detail = ?"
                         " WHERE release_id = ? AND seq = ?",
                         (now(), outcome, json.dumps(detail or {}), release_id, seq))

    def step_note(self, release_id: int, seq: int, detail: dict[str, Any]) -> None:
        """Record what a step is about to do, before it does it (read back by recovery)."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE release_steps SET detail = ? WHERE release_id = ? AND seq = ?",
                         (json.dumps(detail), release_id, seq))

    def finish(self, release_id: int, status: str, reason: str = "", duration_s: float | None = None) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE releases SET status = ?, reason = ?, finished_at = ?, duration_s = ?"
                         " WHERE id = ?", (status, reason, now(), duration_s, release_id))

    def request(self, release_id: int, what: str, who: str) -> bool:
        """Ask a running release to abort, promote or approve; False when it is no longer running (or, for
        an approval, when another request is pending: an abort or a promotion is never overwritten by one)."""
        unanswered = " AND request IS NULL" if what == "approve" else ""
        with self.store.transaction() as conn:
            cur = conn.execute("UPDATE releases SET request = ?, requested_by = ? WHERE id = ? AND status = ?"
                               + unanswered, (what, who, release_id, RUNNING))
            return cur.rowcount == 1

    def clear_request(self, release_id: int, what: str) -> None:
        """Mark a request of kind ``what`` as taken (approvals: each answers one wait); others stay."""
        with self.store.transaction() as conn:
            conn.execute("UPDATE releases SET request = NULL, requested_by = NULL WHERE id = ? AND request = ?",
                         (release_id, what))

    def pending_request(self, release_id: int) -> tuple[str, str] | None:
        rows = self.store.query("SELECT request, requested_by FROM releases WHERE id = ?", (release_id,))
        if rows and rows[0]["request"]:
            return str(rows[0]["request"]), str(rows[0]["requested_by"] or "")
        return None

    def get(self, release_id: int) -> ReleaseRecord | None:
        rows = self.store.query("SELECT * FROM releases WHERE id = ?", (release_id,))
        return self._record(rows[0]) if rows else None

    def running(self) -> ReleaseRecord | None:
        rows = self.store.query("SELECT * FROM releases WHERE status = ? ORDER BY id DESC LIMIT 1", (RUNNING,))
        return self._record(rows[0]) if rows else None

    def recent(self, limit: int = 20) -> list[ReleaseRecord]:
        rows = self.store.query("SELECT * FROM releases ORDER BY id DESC LIMIT ?", (limit,))
        return [self._record(r) for r in rows]

    def last_promoted(self, to_color: str, version: str) -> ReleaseRecord | None:
        """The newest release that promoted ``version`` into ``to_color``."""
        rows = self.store.query("SELECT * FROM releases WHERE kind = 'release' AND status = 'promoted'"
                                " AND to_color = ? AND version = ? ORDER BY id DESC LIMIT 1", (to_color, version))
        return self._record(rows[0]) if rows else None

    def off_newest_since(self, live_version: str, live_variant: str) -> float | None:
        """Since when (epoch seconds) the live version has not been the newest promoted release's
        version serving that release's variant; None while it is.

        That time is the end of the rollback or failover that moved traffic off the newest promoted
        version (or onto the baseline variant) and after which traffic never came back to it. Before
        any release, the version ``up`` started counts as the newest: only a move to the baseline
        variant is behind it.
        """
        [newest_id] = self.store.query(f"SELECT MAX(id) FROM releases WHERE {_PROMOTED}")[0]
        # From the newest promotion on, by id: "+kind" keeps SQLite on the id range, not the kind index.
        rows = self.store.query(f"SELECT kind, finished_at, version, env FROM releases WHERE id >= ? AND "
                                f"({_MOVED.replace('kind =', '+kind =')}) ORDER BY id", (newest_id or 0,))
        newest: tuple[str | None, str] = (None, "model")
        if rows and rows[0]["kind"] == "release":
            newest = (rows[0]["version"], variant(json.loads(rows[0]["env"] or "{}")))

        def is_newest(version: str, served: str) -> bool:
            return newest[0] in (None, version) and served == newest[1]

        if is_newest(live_version, live_variant):
            return None
        since: float | None = None
        for row in rows[1:] if newest[0] is not None else rows:
            if is_newest(row["version"], variant(json.loads(row["env"] or "{}"))):
                since = None
            elif since is None and row["finished_at"]:
                since = epoch(row["finished_at"])
        if since is None and rows and rows[-1]["finished_at"]:
            # Live is not the newest, yet the last move went to it (a recovery set traffic apart from the
            # journal's moves): behind since that move at the latest.
            since = epoch(rows[-1]["finished_at"])
        return since

    def versions(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Every version that has run here, newest first: version -> (image, env)."""
        out: dict[str, tuple[str, dict[str, str]]] = {}
        rows = self.store.query("SELECT image, version, env, from_image, from_version, from_env FROM releases"
                                 " ORDER BY id DESC")
        for r in rows:
            out.setdefault(r["version"], (r["image"], json.loads(r["env"])))
            if r["from_version"]:
                out.setdefault(r["from_version"], (r["from_image"], json.loads(r["from_env"])))
        return out

    def _record(self, row: Any) -> ReleaseRecord:
        d = dict(row)
        for key in ("env", "from_env", "plan"):
            d[key] = json.loads(d[key] or "{}")
        steps = self.store.query("SELECT * FROM release_steps WHERE release_id = ? ORDER BY seq", (d["id"],))
        d["steps"] = [StepRecord(seq=s["seq"], name=s["name"], started_at=s["started_at"],
                                 finished_at=s["finished_at"], outcome=s["outcome"], detail=json.loads(s["detail"]))
                      for s in steps]
        return ReleaseRecord(**d)
