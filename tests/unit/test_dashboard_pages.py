"""The dashboard's pages rendered for a deployment's serve and under a fleet's prefix, the fleet's
overview rows, and readers that read only while someone watches."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from bluegreen.orchestrator.api import dashboard, overview
from bluegreen.orchestrator.api.observer import Reader

SNAP: dict[str, Any] = {
    "at": 1_800_000_000.0,
    "status": {"live": "green", "environments": {"green": {"version": "v2", "container": "running",
                                                           "healthy": True, "health": "ok"},
                                                 "blue": {"version": "v1", "container": "running"}},
               "weights": {"blue": 0, "green": 100}, "proxy_running": True},
    "rollback_to": {"version": "v1", "warm": True},
}


def targets(html: str) -> set[str]:
    """Every link and form target of a page."""
    return set(re.findall(r'(?:href|action|src|data-stream)="([^"]+)"', html))


def test_a_deployments_serve_keeps_its_paths() -> None:
    page = dashboard.dashboard_page(SNAP, "csrf", "churn")
    assert targets(page) == {"/ui/rollback", "/ui/drill", "/logout", "/ui/dashboard.js", "/ui/stream"}
    assert "overview-link" not in page
    assert targets(dashboard.confirm_page(SNAP, "csrf")) == {"/ui/rollback", "/"}


def test_a_fleet_deployments_page_links_and_streams_under_its_prefix() -> None:
    page = dashboard.dashboard_page(SNAP, "csrf", "churn", base="/d/churn", home="/")
    assert targets(page) == {"/d/churn/ui/rollback", "/d/churn/ui/drill", "/logout", "/ui/dashboard.js",
                             "/d/churn/ui/stream", "/"}
    releasing = {**SNAP, "release": {"kind": "release", "id": 7, "version": "v3", "to": "blue", "from": "green",
                                     "from_version": "v2", "actor": "me", "started_at": "now", "step": "shift-25"}}
    assert {"/d/churn/ui/abort", "/d/churn/ui/promote"} <= targets(
        "".join(dashboard.render_sections(releasing, "csrf", "/d/churn").values()))
    confirm = dashboard.confirm_page(SNAP, "csrf", "/d/churn", "churn")
    assert targets(confirm) == {"/d/churn/ui/rollback", "/d/churn/"}
    assert 'id="confirm-project">churn<' in confirm


def test_the_fleets_pages_belong_to_the_dashboard_and_the_rest_to_the_api() -> None:
    assert dashboard.owns("/d/churn/ui/rollback", (overview.PAGES,)) and not dashboard.owns("/d/churn/")
    assert not dashboard.owns("/api/deployments/churn/rollback", (overview.PAGES,))


def test_the_overview_shows_each_deployment_and_a_broken_ones_error_escaped() -> None:
    snap = {"at": 1.0, "proxy": "haproxy on 127.0.0.1:8080", "proxy_running": True, "seconds": 0.012, "deployments": [
        {"name": "fraud", "route": "fraud.example.com", "served": True, "live": "green", "version": "v2",
         "weights": {"blue": 0, "green": 100}, "health": {"blue": "UP", "green": "UP"}, "rps": 12.0,
         "error_rate": 0.0125, "p95_ms": 4.25, "release": None, "standby": "blue",
         "warm": {"color": "blue", "left_s": 30}, "last_drill": "passed 2026-11-30T01:00:00Z",
         "newest_verified_backup": "b-1"},
        {"name": "ranker", "route": "/ranker", "served": False, "error": "unknown key <proxy.bogus>"}]}
    sections = overview.render_sections(snap)
    table = sections["deployments"]
    assert 'href="/d/fraud/" id="link-fraud"' in table and 'id="version-fraud">v2<' in table
    assert "1.25 %" in table and "4.2 ms" in table and "blue</span> warm, 30 s left" in table
    assert 'id="error-ranker">unknown key &lt;proxy.bogus&gt;<' in table
    assert "/d/ranker/" not in table  # not served: no page to link to
    assert "2 deployments" in sections["fleet"] and "1 with an error" in sections["fleet"]
    page = overview.overview_page(snap, "csrf", "/srv/fleet.toml")
    assert 'data-stream="/ui/stream"' in page


class Counting(Reader):
    name = "counting"
    watched_for = 0.3

    def read(self, now: float) -> dict[str, Any]:
        return {"at": now}


def test_a_reader_for_watched_pages_only_reads_while_someone_watches() -> None:
    reader = Counting(0.02, unwatched=math.inf)
    try:
        assert not reader.running and reader.readings == 0  # nobody came: no thread, no reading
        seq, _ = reader.wait(0, 5.0)  # a viewer: the thread starts and reads
        assert seq >= 1 and reader.running
        seq, _ = reader.wait(seq, 5.0)
        assert seq >= 2  # reading on, every interval, while watched
        deadline = time.monotonic() + 5
        while reader.watched() and time.monotonic() < deadline:
            with reader._cond:
                reader._cond.wait(0.05)
        quiet = reader.readings
        with reader._cond:  # 25 intervals with nobody watching: no reading
            reader._cond.wait_for(lambda: reader.readings > quiet + 1, 0.5)
        assert reader.readings <= quiet + 1  # (one may have begun just as the watch ended)
        seq, _ = reader.latest()
        later, _ = reader.wait(seq, 5.0)  # a viewer again: readings resume
        assert later > seq
    finally:
        reader.stop()


def test_a_reader_of_the_overview_reads_slowly_while_nobody_watches() -> None:
    reader = Counting(0.01, unwatched=0.05).start()
    try:
        with reader._cond:
            reader._cond.wait_for(lambda: reader.readings >= 3, 5.0)
        assert reader.readings >= 3 and not reader.watched()  # read with nobody watching
        snap = reader.current(max_age=60)
        assert snap["at"] > 0
    finally:
        reader.stop()
