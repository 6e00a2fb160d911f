"""After a release: live model quality from labelled predictions, against the previous version's.

The reference server stores each prediction, and the true outcome when it becomes known
(``POST /feedback``), in the application database. On ``serve``'s timer (``[monitor] interval``)
the live version's figures over the last ``window`` are computed (accuracy and F1 macro for a
classifier, RMSE, MAE and R² for a regressor) and compared with the previous version's, recorded
while it was live (or computed from its own labelled predictions). When the live version is worse
by more than ``max_quality_drop`` on enough labelled rows, and the previous version is warm and
healthy, bluegreen rolls back, once for that evidence, and says so.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.core.events import Event, Progress
from bluegreen.orchestrator.deployment import Deployment, other
from bluegreen.orchestrator.model import quality
from bluegreen.orchestrator.model.versions import image_version

FIGURES = "monitor_figures"  # state doc: {version: {"metrics": …, "labelled": n, "at": t}}
ACTED = "monitor_acted"  # state doc: the evidence a rollback was made for


def _quiet(_msg: str) -> None:
    pass


@dataclass
class VersionFigures:
    version: str
    labelled: int
    metrics: dict[str, float]
    source: str  # "window" (computed now) | "recorded" (kept from when it was live)


@dataclass
class MonitorReport:
    task: str
    live: VersionFigures | None
    previous: VersionFigures | None
    verdict: str  # ok | degraded | not enough data | no previous version
    reasons: list[str] = field(default_factory=list)
    action: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled(dep: Deployment, version: str, since: str | None, limit: int = 100_000) -> tuple[list[Any], list[Any]]:
    """(predictions, actual outcomes) of ``version``'s labelled predictions, newest first."""
    s = dep.settings
    query = ("SELECT p.prediction, f.actual FROM predictions p JOIN feedback f ON f.prediction_id = p.id"
             " WHERE p.model_version = {m}" + (" AND p.created_at >= {m}" if since else "") +
             " ORDER BY p.id DESC LIMIT {m}")
    params: tuple[Any, ...] = (version, since, limit) if since else (version, limit)
    rows: list[tuple[Any, Any]] = []
    if s.sqlite_path is not None:
        if not s.sqlite_path.exists():
            return [], []
        conn = sqlite3.connect(f"file:{s.sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(query.format(m="?"), params).fetchall()
        except sqlite3.Error:
            return [], []  # no feedback table yet
        finally:
            conn.close()
    elif s.database.url:
        import psycopg

        try:
            with psycopg.connect(s.database.url, connect_timeout=5) as pg:
                rows = pg.execute(query.format(m="%s").replace("p.created_at >= %s",
                                                               "p.created_at >= %s::timestamptz"),
                                  params).fetchall()
        except psycopg.Error:
            return [], []
    task = dep.task.task
    parse = (lambda v: float(v)) if task == "regression" else (lambda v: v)
    return [parse(p) for p, _a in rows], [parse(a) for _p, a in rows]


def figures_of(dep: Deployment, version: str, since: str | None) -> VersionFigures:
    predicted, actual = labelled(dep, image_version(version), since)
    task = dep.task.task
    metrics = quality.metrics(task, predicted, actual) if actual else {}
    return VersionFigures(version, len(actual), metrics, "window" if since else "all labelled")


def check(dep: Deployment, act: bool = True, progress: Progress = _quiet) -> MonitorReport:
    """The figures now, and (with ``act``) a rollback when the live version degraded beyond the limit."""
    m, task = dep.settings.monitor, dep.task.task
    live_color = dep.state.live_color()
    record = dep.state.environment(live_color) if live_color else None
    if record is None:
        return MonitorReport(task, None, None, "nothing is live")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - m.window))
    live = figures_of(dep, record.version, since)
    recorded = dep.state.get_doc(FIGURES) or {}
    if live.labelled >= m.min_labelled:
        recorded[record.version] = {"metrics": live.metrics, "labelled": live.labelled, "at": time.time()}
        dep.state.set_doc(FIGURES, recorded)
    prev_doc = dep.state.get_doc("previous")
    if prev_doc is None:
        return MonitorReport(task, live, None, "no previous version")
    kept = recorded.get(prev_doc["version"])
    previous = (VersionFigures(prev_doc["version"], int(kept["labelled"]), dict(kept["metrics"]), "recorded")
                if kept else figures_of(dep, prev_doc["version"], None))
    report = MonitorReport(task, live, previous, "ok")
    if live.labelled < m.min_labelled or previous.labelled < m.min_labelled:
        report.verdict = "not enough data"
        report.reasons.append(f"{live.labelled} labelled predictions of {live.version} and {previous.labelled} of "
                              f"{previous.version}; monitor.min_labelled = {m.min_labelled}")
        return report
    compared = quality.compare(task, live.metrics, previous.metrics, m.max_quality_drop, {}, "live feedback",
                               live.labelled)
    if compared.ok:
        return report
    report.verdict = "degraded"
    report.reasons = compared.failures
    if act and m.rollback:
        report.action = _roll_back(dep, live_color or "", record.version, prev_doc, report, progress)
    return report


def _roll_back(dep: Deployment, live: str, version: str, previous: dict[str, Any], report: MonitorReport,
               progress: Progress) -> str:
    from bluegreen.orchestrator.core.environment import warm_standby
    from bluegreen.orchestrator.core.rollback import rollback
    from bluegreen.orchestrator.errors import BluegreenError

    evidence = f"{version}->{previous['version']}@{dep.state.get_doc('warm') or {}}"
    if (dep.state.get_doc(ACTED) or {}).get("evidence") == evidence:
        return "already rolled back for this evidence"
    if warm_standby(dep, live) != other(live):
        return f"not rolled back: the previous version {previous['version']} is not warm"
    dep.state.set_doc(ACTED, {"evidence": evidence, "at": time.time()})
    reason = "monitor: " + "; ".join(report.reasons)
    try:
        result = rollback(dep, None, reason, progress=progress)
    except BluegreenError as exc:
        return f"rollback failed: {exc.message}"
    progress(Event("monitor", f"monitor rolled back to {result.version}: {reason}", version=result.version))
    dep.notify("monitor_rollback", f"the monitor rolled back to {result.version}: {reason}", version=result.version)
    return f"rolled back to {result.version}"
