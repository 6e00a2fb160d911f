"""What the dashboard shows, read once per interval and shared by every viewer.

One thread in ``serve`` reads the deployment (status from the proxy, the engine and the colours;
the release in progress; drills, backups and history from the journal) and each colour's traffic:
requests per second, error rate and p95 latency over the last interval, from the proxy's per-server
counters and the colour's latency histogram (or the proxy's timings when it has none), the same
figures a release step judges. Viewers wait for the next reading (server-sent events); nobody's
page load makes the deployment do more work.

``Reader`` is that thread's life, shared with the fleet's overview (overview.py): it reads every
``interval`` while someone watches (a page served or a stream waiting within the last
``WATCHED_FOR`` seconds), and every ``unwatched`` seconds otherwise; ``math.inf`` reads nothing
until a viewer comes. Its thread starts with the first viewer, so a fleet's deployment whose page
nobody opens costs no thread and no reading.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urlsplit

from bluegreen.orchestrator.analysis import steps as analysis
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.settings.core import COLORS


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def release_view(rec: Any, now: float) -> dict[str, Any]:
    """The release in progress: its steps, the current one, the bake's time left, the team's checks so far
    and the approval it waits for."""
    planned = {s.get("name"): s for s in (rec.plan or {}).get("steps", [])}
    steps = []
    current = None
    for name, planned_step in planned.items():
        done = next((s for s in rec.steps if s.name == name), None)
        entry = {"name": name, "outcome": done.outcome if done else "pending",
                 "weight": planned_step.get("weight"), "bake": planned_step.get("bake", 0.0)}
        if done is not None and done.outcome == "started":
            current = entry
            began = _epoch(done.started_at)
            if began is not None and entry["bake"]:
                entry["bake_left_s"] = max(0.0, round(began + float(entry["bake"]) - now, 1))
        steps.append(entry)
    awaiting = rec.awaiting()
    if awaiting is not None:
        awaiting["left_s"] = max(0.0, round(float(awaiting["until"]) - now, 1))
    return {"id": rec.id, "kind": rec.kind, "version": rec.version, "image": rec.image, "to": rec.to_color,
            "from": rec.from_color, "from_version": rec.from_version, "actor": rec.actor,
            "started_at": rec.started_at, "step": rec.step, "current": current, "steps": steps,
            "awaiting_approval": awaiting, "checks": rec.check_results()}


WATCHED_FOR = 30.0  # seconds a page view or a waiting stream keeps a reader at its fast interval


class Reader:
    """Readings taken by one thread and shared: ``latest`` and ``wait`` for viewers, ``tick`` for one now."""

    name = "reader"
    watched_for = WATCHED_FOR

    def __init__(self, interval: float, unwatched: float | None = None) -> None:
        self.interval = interval
        self.unwatched = interval if unwatched is None else unwatched
        self._cond = threading.Condition()
        self._seq = 0
        self._snapshot: dict[str, Any] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._reading = threading.Lock()  # one reading at a time: the thread's, a page's or an action's
        self._watched_at = -math.inf
        self.readings = 0  # how many were taken (the bench and the tests count them)

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> Self:
        with self._starting:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def watched(self) -> bool:
        return time.monotonic() - self._watched_at < self.watched_for

    def watch(self) -> None:
        """A viewer is here: read at the fast interval from now (the thread started if need be)."""
        was = self.watched()
        self._watched_at = time.monotonic()
        if self._thread is None:
            self.start()
        elif not was:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            if self.watched() or math.isfinite(self.unwatched) or self._seq == 0:
                self.tick()
            pause = self.interval if self.watched() else self.unwatched
            self._wake.wait(None if math.isinf(pause) else max(0.05, pause - (time.monotonic() - began)))
            self._wake.clear()

    # -- readers -------------------------------------------------------------------------------
    def latest(self) -> tuple[int, dict[str, Any]]:
        self.watch()
        with self._cond:
            return self._seq, self._snapshot

    def current(self, max_age: float | None = None) -> dict[str, Any]:
        """The latest reading if it is at most ``max_age`` seconds old (two intervals by default), else one now."""
        seq, snap = self.latest()  # (a viewer: the thread starts, or wakes, and reads at once)
        limit = 2 * self.interval + 0.5 if max_age is None else max_age
        if seq and time.time() - float(snap.get("at", 0.0)) <= limit:
            return dict(snap)
        later, snap = self.wait(seq, max(5.0, 5 * self.interval))
        return dict(snap) if later > seq else dict(self.tick())

    def wait(self, after: int, timeout: float) -> tuple[int, dict[str, Any]]:
        """The next reading after ``after`` (or the current one when ``timeout`` passes first)."""
        self.watch()
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after, timeout)
            return self._seq, self._snapshot

    def tick(self) -> dict[str, Any]:
        """Read now, and hand the reading to every viewer."""
        with self._reading:
            snapshot = self.read(time.time())
            self.readings += 1
        with self._cond:
            self._seq += 1
            self._snapshot = snapshot
            self._cond.notify_all()
        return snapshot

    def read(self, now: float) -> dict[str, Any]:
        raise NotImplementedError


class Observer(Reader):
    """One deployment's dashboard readings (see the module's docstring)."""

    name = "dashboard-observer"

    def __init__(self, base: Deployment, interval: float = 1.0, keep_seconds: float = 600.0,
                 unwatched: float | None = None) -> None:
        super().__init__(interval, unwatched)
        self.dep = base.acting_as("dashboard")
        self.points: deque[dict[str, Any]] = deque(maxlen=max(10, int(keep_seconds / interval)))
        self._previous: dict[str, tuple[float, analysis.Snapshot]] = {}
        self._slow_at = 0.0
        self._slow: dict[str, Any] = {}
        self._read_at = 0.0

    # -- one reading ---------------------------------------------------------------------------
    def read(self, now: float) -> dict[str, Any]:
        snapshot: dict[str, Any] = {"at": now, "errors": []}
        if now - self._read_at > max(5.0, 5 * self.interval):
            # Readings resume after a pause (nobody watched): a traffic point over the whole pause would
            # mislead, so the counters start afresh.
            self._previous.clear()
        self._read_at = now
        try:
            snapshot.update(self._state(now))
        except Exception as exc:
            snapshot["errors"].append(f"status: {type(exc).__name__}: {getattr(exc, 'message', exc)}")
        try:
            self._sample(now)
        except Exception as exc:
            snapshot["errors"].append(f"traffic: {type(exc).__name__}: {getattr(exc, 'message', exc)}")
        snapshot["points"] = list(self.points)
        return snapshot

    def _state(self, now: float) -> dict[str, Any]:
        from bluegreen.orchestrator.core.rollback import resolve_target
        from bluegreen.orchestrator.core.status import status
        from bluegreen.orchestrator.state.journal import Journal

        dep = self.dep
        st = status(dep)
        journal = Journal(dep.state)
        current = journal.running()
        out: dict[str, Any] = {"status": st.to_dict(),
                               "release": release_view(current, now) if current is not None else None}
        try:
            target = resolve_target(dep, None)
            out["rollback_to"] = {"version": target.version, "variant": target.variant, "warm": bool(
                st.warm and st.warm.get("color") != st.live)}
        except Exception as exc:
            out["rollback_to"] = {"error": getattr(exc, "message", str(exc))}
        if now - self._slow_at > 5 or not self._slow:  # the journal's lists and the backups: every 5 s
            recent = journal.recent(200)
            self._slow = {
                "drills": [r.to_dict() for r in recent if r.kind == "drill"][:5],
                "history": [r.to_dict() for r in recent if r.kind in ("release", "rollback", "failover")][:10],
                "backups": [s.to_dict() for s in dep.backups.all_sets()[:5]],
            }
            self._slow_at = now
        out.update(self._slow)
        return out

    def _sample(self, now: float) -> None:
        from bluegreen.orchestrator.common import plainhttp
        from bluegreen.orchestrator.errors import BluegreenError

        dep = self.dep
        try:
            stats = dep.proxy.stats()
            timings = dep.proxy.latency()
        except BluegreenError:
            return  # the proxy is down: no traffic to chart (status says why)
        for color in COLORS:
            s = stats.get(color)
            if s is None:
                continue
            text = ""
            url = dep.metrics_url(color)
            if url is not None:
                parts = urlsplit(url)
                try:
                    code, body = plainhttp.get(parts.path or "/", host=parts.hostname or "127.0.0.1",
                                               port=parts.port or 80, timeout=0.5)
                    text = body.decode(errors="replace") if code == 200 else ""
                except OSError:
                    text = ""
            snap = replace(analysis.snapshot(s, text, dep.contract.latency_histogram),
                           proxy_buckets=timings.get(color, ()))
            before = self._previous.get(color)
            self._previous[color] = (now, snap)
            if before is None:
                continue
            seconds = max(1e-6, now - before[0])
            requests = max(0, snap.responses - before[1].responses)
            errors = max(0, snap.errors - before[1].errors)
            lat = analysis.latency(before[1], snap)
            self.points.append({"t": round(now, 2), "color": color, "rps": round(requests / seconds, 1),
                                "error_rate": round(errors / requests, 4) if requests else 0.0,
                                "p95_ms": None if lat.p95_ms is None else round(lat.p95_ms, 1),
                                "p95_source": lat.source, "weight": s.weight})
