"""GET /metrics from the state alone: every deployment's series under one family each, a broken or
hanging deployment reported down without the others' series, and how long the live version has not
been the newest promoted one (with nothing running: what cannot be reached is absent or 0)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bluegreen.orchestrator.api.metrics import render
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.settings.model import load_settings
from bluegreen.orchestrator.state.journal import Journal
from bluegreen.orchestrator.state.store import StateStore
from tests.conftest import wait_for, write_settings

pytestmark = pytest.mark.usefixtures("no_bluegreen_variables")


def deployment(root: Path, name: str, extra: str = "") -> Deployment:
    """A deployment over ``root`` with nothing running: its Docker engine is a socket that does not exist."""
    root.mkdir(parents=True, exist_ok=True)
    text = f'project = "{name}"\n\n[docker]\nhost = "unix://{root}/no-engine.sock"\n\n{extra}'
    return Deployment(load_settings(write_settings(root, text)), actor="tester")


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    wanted = set(labels.items())
    found = [v for (n, ls), v in parsed.items() if n == name and wanted <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def test_a_deployment_with_nothing_running_renders_what_it_can_and_absent_samples_for_the_rest(
        tmp_path: Path) -> None:
    dep = deployment(tmp_path / "fraud", "fraud", '[backups]\npitr = "litestream"\n')
    text = render([dep])
    parsed = samples(text)
    assert value(parsed, "bluegreen_deployment_up", deployment="fraud", project="fraud") == 1
    assert value(parsed, "bluegreen_proxy_up", deployment="fraud") == 0  # its engine does not answer
    assert value(parsed, "bluegreen_archive_running", deployment="fraud") == 0
    assert value(parsed, "bluegreen_weight_percent", deployment="fraud") is None
    assert value(parsed, "bluegreen_newest_verified_backup_age_seconds", deployment="fraud") is None
    # The first rollback and failover are increases Prometheus can see: their counters start at 0.
    assert value(parsed, "bluegreen_operations_total", deployment="fraud", kind="rollback", outcome="switched") == 0
    assert value(parsed, "bluegreen_operations_total", deployment="fraud", kind="failover",
                 outcome="failed_over") == 0
    for (_name, labels), _v in parsed.items():
        assert {"deployment", "project"} <= {k for k, _ in labels}


def test_every_family_appears_once_with_the_samples_of_every_deployment(tmp_path: Path) -> None:
    deps = [deployment(tmp_path / name, name) for name in ("fraud", "churn", "ranker")]
    for dep in deps:
        dep.state.record_environment("blue", "m:v1", "v1", "c", 1)
        dep.state.set_live("blue", {"blue": 100, "green": 0})
    text = render(deps).decode()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)) > 10
    parsed = samples(text.encode())
    for name in ("fraud", "churn", "ranker"):
        assert value(parsed, "bluegreen_live", deployment=name, colour="blue") == 1
        assert value(parsed, "bluegreen_environment_info", deployment=name, colour="blue", version="v1",
                     variant="model") == 1


def test_a_broken_deployment_is_reported_down_and_the_others_keep_their_series(tmp_path: Path) -> None:
    good = deployment(tmp_path / "fraud", "fraud")
    good.state.record_environment("green", "m:v2", "v2", "c", 1)
    good.state.set_live("green", {"blue": 0, "green": 100})
    broken = deployment(tmp_path / "churn", "churn")
    broken.settings.state_dir.mkdir(parents=True)
    (broken.settings.state_dir / "state.db").write_bytes(b"this is not a database" * 100)
    parsed = samples(render([broken, good], unreadable=["ranker"]))
    assert value(parsed, "bluegreen_deployment_up", deployment="churn") == 0
    assert value(parsed, "bluegreen_deployment_up", deployment="ranker") == 0
    assert value(parsed, "bluegreen_deployment_up", deployment="fraud") == 1
    assert [n for (n, ls), _ in parsed.items() if ("deployment", "churn") in ls] == ["bluegreen_deployment_up"]
    assert value(parsed, "bluegreen_live", deployment="fraud", colour="green") == 1


class HangingProxy:
    """The deployment's proxy, but one that does not answer until released (a fault the real one cannot make
    on demand)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.release = threading.Event()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def running(self) -> bool:
        self.calls += 1
        self.release.wait(30)
        return False


def test_a_deployment_that_does_not_answer_is_reported_down_in_time_and_read_again_once_it_answers(
        tmp_path: Path) -> None:
    good = deployment(tmp_path / "fraud", "fraud")
    hung = deployment(tmp_path / "churn", "churn")
    proxy = HangingProxy(hung.proxy)
    hung.__dict__["proxy"] = proxy
    try:
        first = samples(render([hung, good], timeout=0.5))
        assert value(first, "bluegreen_deployment_up", deployment="churn") == 0
        assert value(first, "bluegreen_deployment_up", deployment="fraud") == 1
        second = samples(render([hung, good], timeout=0.5))
        assert value(second, "bluegreen_deployment_up", deployment="churn") == 0
        assert proxy.calls == 1  # not asked again while the first read hangs
    finally:
        proxy.release.set()

    def answered() -> bool:
        return value(samples(render([hung, good], timeout=5)), "bluegreen_deployment_up", deployment="churn") == 1

    assert wait_for(answered, timeout=10)


# -- how long the live version has not been the newest promoted one --------------------------------------
def move(store: StateStore, kind: str, version: str, status: str, at: float, env: dict[str, str] | None = None,
         colours: tuple[str, str] = ("blue", "green")) -> None:
    """A journal row of ``kind`` that ended at ``at`` (epoch seconds)."""
    journal = Journal(store)
    rid = journal.begin(kind, "tester", f"m:{version}", version, env or {}, colours[0], colours[1], "m:v0", "v0", {},
                        {})
    journal.finish(rid, status)
    with store.transaction() as conn:
        conn.execute("UPDATE releases SET finished_at = ? WHERE id = ?",
                     (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)), rid))


BASELINE = {"MODEL_VARIANT": "baseline"}


def test_the_newest_promoted_version_live_is_not_behind(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    journal = Journal(store)
    assert journal.off_newest_since("v1", "model") is None  # nothing released: what `up` started
    move(store, "release", "v2", "promoted", 1000)
    assert journal.off_newest_since("v2", "model") is None
    move(store, "release", "v3", "rolled_back", 2000)  # a failed release leaves v2 the newest
    move(store, "release", "w2", "promoted", 3000, colours=("green", "green"))  # a worker's: no traffic moved
    assert journal.off_newest_since("v2", "model") is None


def test_behind_counts_from_the_first_move_off_the_newest_and_ends_when_traffic_returns(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    journal = Journal(store)
    move(store, "release", "v2", "promoted", 1000)
    move(store, "rollback", "v1", "switched", 2000)
    assert journal.off_newest_since("v1", "model") == 2000
    move(store, "rollback", "v1", "switched", 3000, BASELINE)  # further away: still since the first move
    assert journal.off_newest_since("v1", "baseline") == 2000
    move(store, "rollback", "v2", "switched", 4000)  # back on the newest
    assert journal.off_newest_since("v2", "model") is None
    move(store, "failover", "v1", "failed_over", 5000)  # the live colour died: the standby runs v1
    assert journal.off_newest_since("v1", "model") == 5000
    move(store, "release", "v3", "promoted", 6000)  # the next promotion
    assert journal.off_newest_since("v3", "model") is None


def test_the_newest_version_on_its_baseline_variant_is_behind(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    journal = Journal(store)
    move(store, "rollback", "v1", "switched", 1000, BASELINE)  # no release yet: `up` started v1
    assert journal.off_newest_since("v1", "baseline") == 1000
    move(store, "rollback", "v1", "switched", 2000)
    assert journal.off_newest_since("v1", "model") is None
    move(store, "release", "v2", "promoted", 3000)
    move(store, "rollback", "v2", "switched", 4000, BASELINE)
    assert journal.off_newest_since("v2", "baseline") == 4000


def test_the_gauges_say_how_long_and_whether_the_baseline_serves(tmp_path: Path) -> None:
    dep = deployment(tmp_path / "fraud", "fraud")
    move(dep.state, "release", "v2", "promoted", time.time() - 9000)
    move(dep.state, "rollback", "v2", "switched", time.time() - 7200, BASELINE)
    dep.state.record_environment("blue", "m:v2", "v2", "c", 1, BASELINE)
    dep.state.set_live("blue", {"blue": 100, "green": 0})
    parsed = samples(render([dep]))
    behind = value(parsed, "bluegreen_behind_newest_seconds", deployment="fraud")
    assert behind is not None and 7200 <= behind < 7200 + 60
    assert value(parsed, "bluegreen_on_baseline", deployment="fraud") == 1
    assert value(parsed, "bluegreen_environment_info", deployment="fraud", colour="blue", variant="baseline") == 1
    assert value(parsed, "bluegreen_operations_total", deployment="fraud", kind="rollback", outcome="switched") == 1
    assert value(parsed, "bluegreen_rollback_duration_seconds_count", deployment="fraud") == 0  # none timed


def test_the_counts_stay_right_as_rows_are_added_finished_deleted_and_the_database_replaced(
        tmp_path: Path) -> None:
    """Each scrape adds only the rows written since the one before (see Tally): nothing is counted twice
    or missed when a running release finishes later, and a database that lost rows is counted again."""
    dep = deployment(tmp_path / "fraud", "fraud")
    store, journal = dep.state, Journal(dep.state)

    def scraped() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return samples(render([dep]))

    def operations(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], kind: str, outcome: str) -> float:
        found = value(parsed, "bluegreen_operations_total", kind=kind, outcome=outcome)
        return 0.0 if found is None else found

    move(store, "release", "v2", "promoted", 1000)
    drill = journal.begin("drill", "tester", "m:v2", "v2", {}, "green", "blue", "m:v2", "v2", {}, {})
    journal.step_started(drill, 0, "warm")
    journal.step_finished(drill, 0, "done", {"rto_s": 0.004})
    journal.finish(drill, "passed")
    first = scraped()
    assert operations(first, "release", "promoted") == 1 and operations(first, "drill", "passed") == 1
    assert value(first, "bluegreen_last_drill_ok") == 1 and value(first, "bluegreen_last_drill_rto_seconds") == 0.004

    running = journal.begin("release", "tester", "m:v3", "v3", {}, "green", "blue", "m:v2", "v2", {}, {})
    rollback = journal.begin("rollback", "tester", "m:v1", "v1", {}, "green", "blue", "m:v2", "v2", {}, {})
    journal.finish(rollback, "switched", duration_s=0.02)  # finished after a row still running
    with store.action("alertmanager", "alert", {"action": "rollback"}):
        pass
    second = scraped()
    assert operations(second, "rollback", "switched") == 1 and operations(second, "release", "running") == 0
    assert value(second, "bluegreen_rollback_duration_seconds_bucket", le="0.025") == 1
    assert value(second, "bluegreen_rollback_duration_seconds_bucket", le="0.01") == 0
    assert value(second, "bluegreen_alerts_total", action="rollback") == 1

    journal.finish(running, "rolled_back")
    failed = journal.begin("drill", "tester", "m:v2", "v2", {}, "green", "blue", "m:v2", "v2", {}, {})
    journal.finish(failed, "failed")
    with store.action("alertmanager", "alert", {"action": "record"}):
        pass
    third = scraped()
    assert operations(third, "rollback", "switched") == 1  # not counted again when folded in
    assert operations(third, "release", "rolled_back") == 1 and operations(third, "release", "promoted") == 1
    assert value(third, "bluegreen_last_drill_ok") == 0 and value(third, "bluegreen_last_drill_rto_seconds") is None
    assert value(third, "bluegreen_alerts_total", action="record") == 1
    assert value(third, "bluegreen_rollback_duration_seconds_count") == 1

    with store.transaction() as conn:  # rows went away, as after restoring an older copy in place
        conn.execute("DELETE FROM releases WHERE id > 1")
    fourth = scraped()
    assert operations(fourth, "release", "promoted") == 1 and operations(fourth, "rollback", "switched") == 0
    assert value(fourth, "bluegreen_last_drill_ok") is None

    store.close()  # another file in its place: counted from its own rows
    dep.state.path.unlink()
    replaced = deployment(tmp_path / "fraud", "fraud")
    move(replaced.state, "rollback", "v1", "switched", 1000)
    fifth = samples(render([replaced]))
    assert operations(fifth, "rollback", "switched") == 1 and operations(fifth, "release", "promoted") == 0


def test_a_database_written_before_the_indexes_gets_them_when_opened(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.set_live("blue", {"blue": 100, "green": 0})
    with store.transaction() as conn:
        conn.execute("DROP INDEX releases_by_kind")
        conn.execute("DROP INDEX audit_by_action")
        conn.execute("DROP INDEX releases_running")
    store.conn.execute("PRAGMA user_version = 1")
    store.close()
    again = StateStore(tmp_path / "state.db")
    names = {r[0] for r in again.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"releases_by_kind", "releases_running", "audit_by_action"} <= names
    assert again.live_color() == "blue"


def test_a_fleet_serve_reports_every_member_and_a_member_whose_settings_do_not_validate_as_down(
        tmp_path: Path) -> None:
    """GET /metrics of `bluegreen fleet serve`, its endpoint called in process: a series per member."""
    from bluegreen.orchestrator.api.fleet import FleetService, create_fleet_app
    from bluegreen.orchestrator.core.events import EventLog
    from bluegreen.orchestrator.settings.fleet import FLEET_TEMPLATE, load_fleet

    blocks = ""
    for name, extra in (("fraud", ""), ("churn", "\n[proxy]\nbogus = 1\n")):
        (tmp_path / name).mkdir()
        write_settings(tmp_path / name, f'project = "{name}"\n\n[docker]\nhost = "unix://{tmp_path}/none.sock"\n'
                                        + extra)
        blocks += f'\n[[deployment]]\nname = "{name}"\ndir = "{name}"\nprefix = "/{name}"\n'
    (tmp_path / "fleet.toml").write_text(FLEET_TEMPLATE.replace('supervisor = "container"', 'supervisor = "process"')
                                         + blocks)
    service = FleetService(load_fleet(tmp_path / "fleet.toml"), "t0k3n-for-the-tests-0123456789", EventLog())
    assert list(service.members) == ["fraud"] and "proxy.bogus" in service.broken["churn"]
    [endpoint] = [r.endpoint for r in create_fleet_app(service).routes if getattr(r, "path", "") == "/metrics"]
    parsed = samples(endpoint().body)
    assert value(parsed, "bluegreen_deployment_up", deployment="fraud") == 1
    assert value(parsed, "bluegreen_deployment_up", deployment="churn") == 0
    assert value(parsed, "bluegreen_proxy_up", deployment="fraud") == 0  # the fleet's proxy is not running
    assert [n for (n, ls), _ in parsed.items() if ("deployment", "churn") in ls] == ["bluegreen_deployment_up"]
