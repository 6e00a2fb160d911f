"""``GET /metrics``: bluegreen's own figures, read from the state at each scrape (prometheus-client).

The live colour, each colour's weight (read from the proxy), releases, rollbacks, drills and
failovers by outcome, the rollback duration histogram, the last drill's result and RTO, the age of
the newest verified backup, and alerts received by action. Computed from the journal and the
audit log, so the figures survive restarts of ``serve`` and count the CLI's work as well as the API's.
"""

from __future__ import annotations

import calendar
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError
from bluegreen.orchestrator.settings.core import COLORS

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StateCollector(Collector):
    def __init__(self, dep: Deployment) -> None:
        self.dep = dep

    def collect(self) -> Iterator[Metric]:
        dep, project = self.dep, self.dep.settings.project
        live_color = dep.state.live_color()
        live = GaugeMetricFamily("bluegreen_live", "1 for the colour that is live.", labels=["project", "colour"])
        for color in COLORS:
            live.add_metric([project, color], int(color == live_color))
        yield live
        weight = GaugeMetricFamily("bluegreen_weight_percent", "Each colour's share of traffic, read from the proxy.",
                                   labels=["project", "colour"])
        try:
            weights = dep.proxy.weights() if dep.proxy.running() else {}
        except BluegreenError:
            weights = {}
        for color, value in weights.items():
            weight.add_metric([project, color], value)
        yield weight
        rows = dep.state.query("SELECT id, kind, status, duration_s FROM releases ORDER BY id")
        operations = CounterMetricFamily("bluegreen_operations",
                                         "Releases, rollbacks, drills and failovers by outcome.",
                                         labels=["project", "kind", "outcome"])
        for (kind, status), n in sorted(Counter((r["kind"], r["status"]) for r in rows).items()):
            operations.add_metric([project, kind, status], n)
        yield operations
        durations = [float(r["duration_s"]) for r in rows if r["kind"] == "rollback" and r["duration_s"] is not None]
        buckets: list[tuple[str, float]] = [(repr(b), sum(d <= b for d in durations)) for b in BUCKETS]
        buckets.append(("+Inf", len(durations)))
        histogram = HistogramMetricFamily("bluegreen_rollback_duration_seconds", "Time each rollback took.",
                                          labels=["project"])
        histogram.add_metric([project], buckets, sum(durations))
        yield histogram
        yield from self._drill(rows, project)
        scheduled = GaugeMetricFamily("bluegreen_last_scheduled_backup_ok",
                                      "1 when the last scheduled backup was taken and restored into scratch.",
                                      labels=["project"])
        backups = [r for r in rows if r["kind"] == "backup" and r["status"] != "running"]
        if backups:
            scheduled.add_metric([project], int(backups[-1]["status"] == "passed"))
        yield scheduled
        yield from self._backup(project)
        yield from self._archive(project)
        alerts = CounterMetricFamily("bluegreen_alerts", "Alertmanager deliveries, by the action they led to.",
                                     labels=["project", "action"])
        for action, n in sorted(Counter(json.loads(a["args"]).get("action", "record") for a in
                                        dep.state.query("SELECT args FROM audit WHERE action = 'alert'")).items()):
            alerts.add_metric([project, action], n)
        yield alerts

    def _drill(self, rows: list[Any], project: str) -> Iterator[Metric]:
        ok = GaugeMetricFamily("bluegreen_last_drill_ok", "1 when the last drill passed, 0 when it failed.",
                               labels=["project"])
        rto = GaugeMetricFamily("bluegreen_last_drill_rto_seconds", "The last drill's recovery time.",
                                labels=["project"])
        drills = [r for r in rows if r["kind"] == "drill" and r["status"] != "running"]
        if drills:
            ok.add_metric([project], int(drills[-1]["status"] == "passed"))
            steps = self.dep.state.query("SELECT detail FROM release_steps WHERE release_id = ?", (drills[-1]["id"],))
            value = json.loads(steps[0]["detail"]).get("rto_s") if steps else None
            if value is not None:
                rto.add_metric([project], float(value))
        yield ok
        yield rto

    def _backup(self, project: str) -> Iterator[Metric]:
        age = GaugeMetricFamily("bluegreen_newest_verified_backup_age_seconds",
                                "Seconds since the newest verified backup set was taken.", labels=["project"])
        try:
            verified = [s for s in self.dep.backups.all_sets() if s.verified_at]
        except BluegreenError:
            verified = []
        if verified:
            taken = calendar.timegm(time.strptime(verified[0].manifest["created_at"], "%Y-%m-%dT%H:%M:%SZ"))
            age.add_metric([project], max(0.0, time.time() - taken))
        yield age


    def _archive(self, project: str) -> Iterator[Metric]:
        running = GaugeMetricFamily("bluegreen_archive_running", "1 while the continuous archive's replicator runs.",
                                    labels=["project"])
        pending = GaugeMetricFamily("bluegreen_archive_pending_transactions",
                                    "Committed transactions not yet in the archive.", labels=["project"])
        newest = GaugeMetricFamily("bluegreen_archive_newest_age_seconds",
                                   "Seconds since the newest archived change.", labels=["project"])
        window = GaugeMetricFamily("bluegreen_archive_window_seconds",
                                   "How far back the archive can restore to a point in time.", labels=["project"])
        base = GaugeMetricFamily("bluegreen_archive_base_backup_age_seconds",
                                 "Seconds since the newest base backup of the archive ended (pgBackRest).",
                                 labels=["project"])
        archive = self.dep.pitr
        if archive is not None:
            try:
                state = archive.state()
            except BluegreenError:
                state = {"running": False}
            running.add_metric([project], 1.0 if state.get("running") else 0.0)
            if state.get("pending_transactions") is not None:
                pending.add_metric([project], float(state["pending_transactions"]))
            if state.get("newest") and state.get("oldest"):
                first = calendar.timegm(time.strptime(str(state["oldest"]), "%Y-%m-%dT%H:%M:%SZ"))
                last = calendar.timegm(time.strptime(str(state["newest"]), "%Y-%m-%dT%H:%M:%SZ"))
                newest.add_metric([project], max(0.0, time.time() - last))
                window.add_metric([project], max(0.0, time.time() - first))
            if state.get("newest_base_backup"):
                ended = calendar.timegm(time.strptime(str(state["newest_base_backup"]), "%Y-%m-%dT%H:%M:%SZ"))
                base.add_metric([project], max(0.0, time.time() - ended))
        yield running
        yield pending
        yield newest
        yield window
        yield base


def render(deps: list[Deployment]) -> bytes:
    registry = CollectorRegistry()
    registry.register(StateCollector(deps[0]))
    return generate_latest(registry)
