"""Point-in-time recovery of a PostgreSQL application database through the real pgBackRest, against
a real cluster made by the test (its own port; archive_mode needs a restart, which the shared
server is not ours to do): refused until PostgreSQL archives, a restore point for every release,
restores to a release or a time into a new database and in place, faults of the archive."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bluegreen.orchestrator.common.ports import free_ports
from tests.conftest import Project, component_missing, wait_for
from tests.pgcluster import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    missing = [tool for tool in ("pgbackrest", "pg_dump", "runuser") if shutil.which(tool) is None]
    if missing or not Path("/usr/lib/postgresql").is_dir():
        component_missing(f"pgBackRest and PostgreSQL are needed "
                          f"({missing or 'postgresql'}; scripts/provision.sh has them)")
    made = Cluster(free_ports(1)[0]).create()
    yield made
    made.remove()


@pytest.fixture
def archived(project: Project, cluster: Cluster, docker_client: Any) -> Iterator[tuple[Project, Cluster]]:
    """Blue serving v1 on the test cluster, archived by pgBackRest (the lines added as bluegreen said)."""
    project.env.update({**cluster.settings_env(), "BLUEGREEN_RELEASE__BAKE": "0.5s",
                        "BLUEGREEN_BACKUPS__PGBACKREST__ARCHIVE_TIMEOUT": "5s"})
    refused = project.run("up", timeout=300)
    assert refused.code != 0 and "PostgreSQL needs, in postgresql.conf" in refused.err, refused.err
    lines = [line.strip() for line in refused.err.splitlines() if line.strip().startswith("archive_")]
    assert [line.split(" =")[0] for line in lines] == ["archive_mode", "archive_command", "archive_timeout"], lines
    assert "--stanza=app archive-push %p" in lines[1] and lines[2] == "archive_timeout = 5"
    with cluster.conf.open("a") as conf:
        conf.write("\n".join(lines) + "\n")
    cluster.restart()
    up = project.run("up", "--json", timeout=300)
    assert up.code == 0, up.err
    assert any("first full backup" in c for c in json.loads(up.out)["changed"]), up.out
    yield project, cluster
    project.run("down", timeout=120)


def marker(cluster: Cluster, name: str, dbname: str = "app") -> None:
    cluster.sql("CREATE TABLE IF NOT EXISTS markers (name text NOT NULL); ALTER TABLE markers OWNER TO app; "
                f"INSERT INTO markers VALUES ('{name}')", dbname)


def markers_in(cluster: Cluster, dbname: str) -> list[str]:
    return cluster.sql("SELECT name FROM markers ORDER BY name", dbname)


def test_a_release_and_a_time_are_restored_exactly_beside_live_and_in_place(
        archived: tuple[Project, Cluster]) -> None:
    project, cluster = archived
    marker(cluster, "before")
    release = project.run("release", "bluegreen-model:v2", "--steps", "100", timeout=300)
    assert release.code == 0, release.err
    rid = json.loads(project.run("history", "--json").out)["releases"][0]["id"]
    assert f"restore point: pgBackRest restore point bluegreen-release-{rid}" in release.err
    assert "backup set" in release.err  # the full set too, as before
    between = datetime.now(UTC)
    assert wait_for(lambda: datetime.now(UTC) - between > timedelta(seconds=1.2), timeout=5)
    marker(cluster, "after")
    at = between.strftime("%Y-%m-%dT%H:%M:%SZ")

    by_release = project.run("backup", "restore", "--before-release", str(rid), "--into", "app_at_release",
                             "--json", timeout=300)
    assert by_release.code == 0, by_release.err
    assert markers_in(cluster, "app_at_release") == ["before"]
    report = json.loads(by_release.out)
    assert report["rows"]["markers"] == 1 and report["live_rows"]["markers"] == 2, report

    by_time = project.run("backup", "restore", "--at", at, "--into", "app_at_time", timeout=300)
    assert by_time.code == 0, by_time.err
    assert markers_in(cluster, "app_at_time") == ["before"]
    assert "markers: 1 rows (live: 2)" in by_time.out
    assert markers_in(cluster, "app") == ["after", "before"]  # live untouched

    status = json.loads(project.run("status", "--json").out)
    archive = status["archive"]
    assert archive["tool"] == "pgbackrest" and archive["running"] is True, archive
    assert archive["oldest"] <= at <= archive["newest"] and archive["newest_base_backup"], archive

    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cases = [
        (["--at", future, "--into", "x_new"], 2, "is in the future"),
        (["--at", "2000-01-01T00:00:00Z", "--into", "x_new"], 2, "outside the recoverable window"),
        (["--before-release", "999", "--into", "x_new"], 2, "there is no release 999"),
        (["--before-release", str(rid), "--into", "app_at_release"], 2, "the database exists"),
        (["--at", at, "--into", "no such name"], 2, "is not a database name"),
        (["--at", at], 2, "pass --yes"),
    ]
    for args, code, words in cases:
        refused = project.run("backup", "restore", *args, timeout=120)
        assert (refused.code, words in refused.err) == (code, True), (args, refused.err)
    assert cluster.sql("SELECT count(*) FROM pg_database WHERE datname = 'x_new'") == ["0"]

    in_place = project.run("backup", "restore", "--before-release", str(rid), "--yes", "--json", timeout=300)
    assert in_place.code == 0, in_place.err
    done = json.loads(in_place.out)
    assert markers_in(cluster, "app") == ["before"]
    sets = {s["id"]: s for s in json.loads(project.run("backup", "list", "--json").out)}
    assert sets[done["safety"]]["database"]["row_counts"]["markers"] == 2  # what live held, kept
    assert sets[done["set"]]["kind"] == "pitr"
    history = project.run("history", "--json").out
    assert "in place" in history

    # With the two functions granted, the restore point goes through bluegreen's own connection.
    cluster.sql("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO app", "app")
    drill = project.run("drill", "--json", timeout=300)
    assert drill.code == 0, drill.err
    doc = json.loads(drill.out)
    assert doc["archive"]["ok"] and doc["archive"]["tables"]["markers"] == 1, doc
    # A dump now holds that grant, which only a superuser may restore: a set still verifies and restores.
    created = project.run("backup", "create", "--json", timeout=120)
    assert created.code == 0, created.err
    verified = project.run("backup", "verify", json.loads(created.out)["id"], timeout=120)
    assert verified.code == 0, verified.err


def test_a_broken_archive_is_said_and_a_release_falls_back_to_a_full_set(
        archived: tuple[Project, Cluster], monkeypatch: pytest.MonkeyPatch) -> None:
    project, cluster = archived
    cluster.sql("ALTER SYSTEM SET archive_command = 'false'")
    cluster.sql("SELECT pg_reload_conf()")
    marker(cluster, "unarchived")
    cluster.sql("SELECT pg_switch_wal()")
    assert wait_for(lambda: cluster.sql("SELECT last_failed_wal IS NOT NULL FROM pg_stat_archiver") == ["t"],
                    timeout=30)
    status = json.loads(project.run("status", "--json").out)
    assert status["archive"]["running"] is False
    assert any("archive_command failed on" in n for n in status["notes"]), status["notes"]
    release = project.run("release", "bluegreen-model:v2", "--steps", "100", timeout=300,
                          env={"BLUEGREEN_BACKUPS__PGBACKREST__ARCHIVE_TIMEOUT": "5s"})
    assert release.code == 0, release.err
    assert "no restore point in the archive" in release.err and "was not archived" in release.err
    assert "the backup set above stands" in release.err

    cluster.sql("ALTER SYSTEM RESET archive_command")
    cluster.sql("SELECT pg_reload_conf()")
    assert wait_for(lambda: json.loads(project.run("status", "--json").out)["archive"]["running"], timeout=90)

    # A scheduled backup is a pgBackRest backup plus its verify, which catches a corrupted repository.
    from bluegreen.orchestrator.core.snapshots import scheduled
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.settings.model import load_settings

    for key, value in project.env.items():
        monkeypatch.setenv(key, value)
    dep = Deployment(load_settings(project.root / "bluegreen.toml"), actor="tester")
    good = scheduled(dep)
    assert good["ok"] and good["pgbackrest"]["type"] == "diff", good
    from bluegreen.orchestrator.api.metrics import render

    assert b"bluegreen_archive_base_backup_age_seconds{" in render([dep])
    files = sorted(p for p in (cluster.pgbackrest_dir / "repo" / "backup").rglob("*") if p.is_file()
                   and "pg_data" in p.parts and p.stat().st_size > 1000)
    files[0].write_bytes(b"corrupted" + files[0].read_bytes()[9:])
    bad = scheduled(dep)
    assert not bad["ok"] and any("pgbackrest verify" in p for p in bad["problems"]), bad
