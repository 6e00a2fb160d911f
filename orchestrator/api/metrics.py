"""``GET /metrics``: bluegreen's own figures for every deployment serve runs, read at each scrape.

Per deployment: whether serve can read it and whether its proxy answers; the live colour, each
colour's weight (read from the proxy) and version; whether the live colour serves the baseline
variant and for how long it has not been the newest promoted version; releases, rollbacks, drills
and failovers by outcome; the rollback duration histogram; the last drill's result and RTO; the
age of the newest verified backup; the continuous archive; alerts received by action. Computed
from the journal and the audit log, so the figures survive restarts of ``serve`` and count the
CLI's work as well as the API's.

Every series carries ``deployment`` (the deployment's name: its settings' ``project``) and
``project`` (the same value, for what was written before deployments had names). Each family is
emitted once with the samples of every deployment; a deployment that raises while it is read, or
is not read within ``READ_TIMEOUT``, has no samples in that scrape and ``bluegreen_deployment_up``
0, and the others are unaffected.

So that a scrape of many deployments stays fast whatever their history: they are read side by side,
the journal is counted once and then only for the rows written since (``Tally``), and a continuous
archive's tool is asked in the background at most every ``ARCHIVE_EVERY`` seconds.
"""

from __future__ import annotations

import calendar
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError
from bluegreen.orchestrator.settings.core import COLORS
from bluegreen.orchestrator.state.journal import BASELINE, Journal, variant

READ_TIMEOUT = 5.0  # seconds: well within Prometheus's default scrape timeout (10 s)
ARCHIVE_EVERY = 30.0  # seconds between two questions to a continuous archive's tool
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LABELS = ("deployment", "project")
# Outcomes whose counters exist from the start at 0, so that the first one is an increase Prometheus sees.
OUTCOMES = {"release": ("promoted", "rolled_back"), "rollback": ("switched",), "failover": ("failed_over",),
            "drill": ("passed", "failed")}


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # gauge | counter | histogram
    doc: str
    labels: tuple[str, ...] = ()

    def make(self) -> Any:
        kind = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "histogram": HistogramMetricFamily}
        return kind[self.kind](self.name, self.doc, labels=[*LABELS, *self.labels])


FAMILIES = (
    Family("bluegreen_deployment_up", "gauge",
           "1 while serve reads the deployment's state; 0 when reading it failed (its other series are absent)."),
    Family("bluegreen_proxy_up", "gauge", "1 while the deployment's proxy runs and answers its runtime API."),
    Family("bluegreen_live", "gauge", "1 for the colour that is live.", ("colour",)),
    Family("bluegreen_weight_percent", "gauge", "Each colour's share of traffic, read from the proxy.", ("colour",)),
    Family("bluegreen_environment_info", "gauge", "1 for each colour that holds a version: the version and the "
           "model variant it serves.", ("colour", "version", "variant")),
    Family("bluegreen_on_baseline", "gauge", "1 while the live colour serves MODEL_VARIANT=baseline."),
    Family("bluegreen_behind_newest_seconds", "gauge",
           "0 while the live version is the newest promoted release's, serving its variant; otherwise the "
           "seconds since the rollback or failover that moved traffic off it."),
    Family("bluegreen_operations", "counter", "Releases, rollbacks, drills, failovers and scheduled backups by "
           "outcome.", ("kind", "outcome")),
    Family("bluegreen_rollback_duration_seconds", "histogram", "Time each rollback took."),
    Family("bluegreen_last_drill_ok", "gauge", "1 when the last drill passed, 0 when it failed."),
    Family("bluegreen_last_drill_rto_seconds", "gauge", "The last drill's recovery time."),
    Family("bluegreen_last_scheduled_backup_ok", "gauge",
           "1 when the last scheduled backup was taken and restored into scratch."),
    Family("bluegreen_newest_verified_backup_age_seconds", "gauge",
           "Seconds since the newest verified backup set was taken."),
    Family("bluegreen_archive_running", "gauge", "1 while the continuous archive's replicator runs."),
    Family("bluegreen_archive_pending_transactions", "gauge", "Committed transactions not yet in the archive."),
    Family("bluegreen_archive_newest_age_seconds", "gauge", "Seconds since the newest archived change."),
    Family("bluegreen_archive_window_seconds", "gauge", "How far back the archive can restore to a point in time."),
    Family("bluegreen_archive_base_backup_age_seconds", "gauge",
           "Seconds since the newest base backup of the archive ended (pgBackRest)."),
    Family("bluegreen_alerts", "counter", "Alertmanager deliveries, by the action they led to.", ("action",)),
)


@dataclass
class Samples:
    """One deployment's samples, kept apart until all of them were read."""

    rows: list[tuple[str, tuple[str, ...], Any, float | None]] = field(default_factory=list)

    def add(self, family: str, value: Any, *labels: str, total: float | None = None) -> None:
        self.rows.append((family, labels, value, total))


class StateCollector(Collector):
    """The families of every deployment in ``deps``; ``unreadable`` names deployments that could not even
    be loaded (settings that no longer validate): they are reported down. A deployment not read within
    ``timeout`` seconds (an engine or a proxy that does not answer) is reported down too, and is not read
    again until that read has ended."""

    def __init__(self, deps: Sequence[Deployment], unreadable: Iterable[str] = (),
                 timeout: float = READ_TIMEOUT) -> None:
        self.deps = list(deps)
        self.unreadable = list(unreadable)
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        families = {f.name: f.make() for f in FAMILIES}
        up = families["bluegreen_deployment_up"]
        # Read side by side: each read waits on sockets and SQLite, which let the other threads run.
        reads = [_start_read(dep) for dep in self.deps]
        wait([r for r in reads if r is not None], timeout=self.timeout)
        for dep, future in zip(self.deps, reads, strict=True):
            name = dep.settings.project
            samples = future.result() if future is not None and future.done() else None
            up.add_metric([name, name], 0.0 if samples is None else 1.0)
            for family, labels, value, total in samples.rows if samples is not None else ():
                if total is None:
                    families[family].add_metric([name, name, *labels], value)
                else:
                    families[family].add_metric([name, name, *labels], value, total)
        for name in self.unreadable:
            up.add_metric([name, name], 0.0)
        yield from families.values()


_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="metrics")
_READING: dict[str, Future[Samples | None]] = {}  # by state directory: the newest read of each deployment
_READING_LOCK = threading.Lock()


def _start_read(dep: Deployment) -> Future[Samples | None] | None:
    """A read of the deployment in the pool; None while its previous read still hangs."""
    key = str(dep.settings.state_dir)
    with _READING_LOCK:
        previous = _READING.get(key)
        if previous is not None and not previous.done():
            return None
        future = _READING[key] = _POOL.submit(_read_apart, dep)
        return future


def _read_apart(dep: Deployment) -> Samples | None:
    """The deployment's samples, or None when reading them raised."""
    samples = Samples()
    try:
        read(dep, samples)
    except Exception:  # one broken deployment must not take the others' series with it
        return None
    return samples


def read(dep: Deployment, out: Samples) -> None:
    """Everything one deployment reports: a few queries of its state, none per row (see Tally)."""
    state = dep.state
    live = state.live_color()
    for color in COLORS:
        out.add("bluegreen_live", int(color == live), color)
    environments = {r["color"]: (r["version"], variant(json.loads(r["env"] or "{}")))
                    for r in state.query("SELECT color, version, env FROM environments")}
    for color, (version, served) in sorted(environments.items()):
        out.add("bluegreen_environment_info", 1, color, version, served)
    if live in environments:
        version, served = environments[live]
        out.add("bluegreen_on_baseline", int(served == BASELINE))
        since = Journal(state).off_newest_since(version, served)
        out.add("bluegreen_behind_newest_seconds", 0.0 if since is None else max(0.0, time.time() - since))
    _proxy(dep, out)
    _journal(dep, out)
    _backup(dep, out)
    _archive(dep, out)


def _proxy(dep: Deployment, out: Samples) -> None:
    try:
        weights = dep.proxy.weights() if dep.proxy.running() else None
    except BluegreenError:
        weights = None
    out.add("bluegreen_proxy_up", int(weights is not None))
    for color, value in (weights or {}).items():
        out.add("bluegreen_weight_percent", value, color)


@dataclass
class Tally:
    """What the finished rows of one state database add up to.

    A journal row never changes once it has an outcome, nor an audit row's arguments once written, so
    each scrape adds only the rows written since the one before: a scrape costs the same after years
    of hourly backups as on the first day.
    """

    identity: tuple[int, int]  # the database file's device and inode: a replaced file is counted again
    releases_upto: int = 0  # every journal row up to this id is finished and counted
    audit_upto: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    rollbacks: int = 0
    rollback_seconds: float = 0.0
    last: dict[str, int] = field(default_factory=dict)  # kind -> id of its newest finished row
    alerts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, row: Any) -> None:
        self.counts[(row["kind"], row["status"])] += 1
        if row["kind"] == "rollback" and row["duration_s"] is not None:
            seconds = float(row["duration_s"])
            self.rollbacks += 1
            self.rollback_seconds += seconds
            for i, bound in enumerate(BUCKETS):
                self.buckets[i] += seconds <= bound
        self.last[row["kind"]] = max(self.last.get(row["kind"], 0), row["id"])

    def forget(self) -> None:
        """Count from the first row again (the database lost rows: it was restored)."""
        fresh = Tally(self.identity)
        for name in ("releases_upto", "audit_upto", "counts", "buckets", "rollbacks", "rollback_seconds", "last",
                     "alerts"):
            setattr(self, name, getattr(fresh, name))

    def copy(self) -> Tally:
        return Tally(self.identity, self.releases_upto, self.audit_upto, Counter(self.counts), list(self.buckets),
                     self.rollbacks, self.rollback_seconds, dict(self.last), Counter(self.alerts))


_TALLIES: dict[str, Tally] = {}  # by state database
_TALLIES_LOCK = threading.Lock()


def tally(dep: Deployment) -> Tally:
    """The deployment's journal and alerts counted up to now (finished rows only)."""
    state = dep.state
    [(top, running, audit_top)] = state.query(
        "SELECT MAX(id), (SELECT MIN(id) FROM releases WHERE status = 'running'), (SELECT MAX(id) FROM audit)"
        " FROM releases")
    top, audit_top = top or 0, audit_top or 0
    stable = top if running is None else running - 1
    info = state.path.stat()
    identity = (info.st_dev, info.st_ino)
    with _TALLIES_LOCK:
        kept = _TALLIES.get(str(state.path))
        if kept is None or kept.identity != identity:
            kept = _TALLIES[str(state.path)] = Tally(identity)
    with kept.lock:
        if top < kept.releases_upto or audit_top < kept.audit_upto:  # rows went away: a restored database
            kept.forget()
        if stable > kept.releases_upto:
            for row in state.query("SELECT id, kind, status, duration_s FROM releases WHERE id > ? AND id <= ?",
                                   (kept.releases_upto, stable)):
                kept.add(row)
            kept.releases_upto = stable
        if audit_top > kept.audit_upto:
            for row in state.query("SELECT COALESCE(json_extract(args, '$.action'), 'record') AS action FROM audit"
                                   " WHERE action = 'alert' AND id > ? AND id <= ?", (kept.audit_upto, audit_top)):
                kept.alerts[str(row["action"])] += 1
            kept.audit_upto = audit_top
        now = kept.copy()
    # Rows after the first one still running are counted afresh each time, once they are finished.
    for row in state.query("SELECT id, kind, status, duration_s FROM releases WHERE id > ? AND status != 'running'",
                           (now.releases_upto,)):
        now.add(row)
    return now


def _journal(dep: Deployment, out: Samples) -> None:
    counted = tally(dep)
    counts = Counter(counted.counts)
    for kind, outcomes in OUTCOMES.items():
        for outcome in outcomes:
            counts[(kind, outcome)] += 0
    for (kind, outcome), n in sorted(counts.items()):
        out.add("bluegreen_operations", n, kind, outcome)
    buckets = [(repr(bound), float(n)) for bound, n in zip(BUCKETS, counted.buckets, strict=True)]
    out.add("bluegreen_rollback_duration_seconds", [*buckets, ("+Inf", float(counted.rollbacks))],
            total=counted.rollback_seconds)
    last = {r["kind"]: r for r in dep.state.query(
        "SELECT r.kind, r.status, s.detail FROM releases r LEFT JOIN release_steps s ON s.release_id = r.id"
        " AND s.seq = 0 WHERE r.id IN (?, ?)", (counted.last.get("drill", 0), counted.last.get("backup", 0)))}
    if "drill" in last:
        out.add("bluegreen_last_drill_ok", int(last["drill"]["status"] == "passed"))
        rto = json.loads(last["drill"]["detail"] or "{}").get("rto_s")
        if rto is not None:
            out.add("bluegreen_last_drill_rto_seconds", float(rto))
    if "backup" in last:
        out.add("bluegreen_last_scheduled_backup_ok", int(last["backup"]["status"] == "passed"))
    for action, n in sorted(counted.alerts.items()):
        out.add("bluegreen_alerts", n, action)


def _age(stamp: Any) -> float:
    return max(0.0, time.time() - calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))


def _backup(dep: Deployment, out: Samples) -> None:
    try:
        verified = next((s for s in dep.backups.all_sets() if s.verified_at), None)
    except BluegreenError:
        verified = None
    if verified is not None:
        out.add("bluegreen_newest_verified_backup_age_seconds", _age(verified.manifest["created_at"]))


_ARCHIVES: dict[str, tuple[float, dict[str, Any], bool]] = {}  # by state directory: when, what, refreshing
_ARCHIVES_LOCK = threading.Lock()


def _ask_archive(dep: Deployment, key: str) -> dict[str, Any]:
    assert dep.pitr is not None
    try:
        state = dep.pitr.state()
    except BluegreenError:
        state = {"running": False}
    with _ARCHIVES_LOCK:
        _ARCHIVES[key] = (time.monotonic(), state, False)
    return state


def _archive_state(dep: Deployment) -> dict[str, Any]:
    """The archive's newest answer. Its tools are separate processes (about 90 ms a deployment), so
    they are asked at most every ARCHIVE_EVERY seconds, in the background once there is an answer."""
    key = str(dep.settings.state_dir)
    with _ARCHIVES_LOCK:
        cached = _ARCHIVES.get(key)
        if cached is not None and not cached[2] and time.monotonic() - cached[0] >= ARCHIVE_EVERY:
            _ARCHIVES[key] = (cached[0], cached[1], True)
            _POOL.submit(_ask_archive, dep, key)
    return cached[1] if cached is not None else _ask_archive(dep, key)


def _archive(dep: Deployment, out: Samples) -> None:
    if dep.pitr is None:
        return
    state = _archive_state(dep)
    out.add("bluegreen_archive_running", 1.0 if state.get("running") else 0.0)
    if state.get("pending_transactions") is not None:
        out.add("bluegreen_archive_pending_transactions", float(state["pending_transactions"]))
    if state.get("newest") and state.get("oldest"):
        out.add("bluegreen_archive_newest_age_seconds", _age(state["newest"]))
        out.add("bluegreen_archive_window_seconds", _age(state["oldest"]))
    if state.get("newest_base_backup"):
        out.add("bluegreen_archive_base_backup_age_seconds", _age(state["newest_base_backup"]))


def render(deps: Sequence[Deployment], unreadable: Iterable[str] = (), timeout: float = READ_TIMEOUT) -> bytes:
    """The Prometheus exposition of every deployment in ``deps`` (each family once); see StateCollector."""
    registry = CollectorRegistry()
    registry.register(StateCollector(deps, unreadable, timeout))
    return generate_latest(registry)
