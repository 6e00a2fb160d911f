"""Releases that carry a schema change, and the snapshot every release takes first."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project
from tests.test_release import Load, assert_blue_serves_alone, releases

V2 = "bluegreen-model:v2"
ADD = "ALTER TABLE predictions ADD COLUMN source TEXT;\n"
DROP = "ALTER TABLE predictions DROP COLUMN source;\n"


@pytest.fixture
def live(project: Project, docker_client: Any) -> Project:
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    return project


def columns(project: Project) -> list[str]:
    with sqlite3.connect(project.db_path, timeout=60) as conn:
        return [r[1] for r in conn.execute("PRAGMA table_info(predictions)")]


def rows(project: Project) -> int:
    with sqlite3.connect(project.db_path, timeout=60) as conn:
        return int(conn.execute("SELECT count(*) FROM predictions").fetchone()[0])


def migrations(tmp: Path, down: bool = True) -> Path:
    d = tmp / "migrations"
    d.mkdir()
    (d / "0001_add_source.up.sql").write_text(ADD)
    if down:
        (d / "0001_add_source.down.sql").write_text(DROP)
    return d


def test_every_release_takes_a_verified_kind_of_snapshot_first(live: Project) -> None:
    assert live.run("release", V2).code == 0
    sets = json.loads(live.run("backup", "list", "--json").out)
    assert [(s["kind"], s["release_id"], s["reason"]) for s in sets] == [("release", 1, "before release of v2")]
    assert live.run("backup", "verify", sets[0]["id"]).code == 0
    assert releases(live)[0]["steps"][0]["name"] == "backup"


def test_a_failed_release_runs_the_down_migration_and_keeps_rows_written_meanwhile(live: Project) -> None:
    d = migrations(live.root)
    with Load(live.proxy_url) as load:
        before = rows(live)
        result = live.run("release", V2, "--migrations", str(d), "--version", "v3")  # fails its gate
    assert result.code == 11
    assert "the candidate reports version 'v2', not 'v3'" in result.err
    assert "source" not in columns(live)  # the old schema
    assert rows(live) >= before + sum(load.codes.values()) - 5 > before  # what blue wrote is still there
    [rec] = releases(live)
    assert "schema reverted by down migrations 0001" in rec["reason"]
    assert [s["name"] for s in rec["steps"]][:2] == ["backup", "migrate"]
    assert_blue_serves_alone(live)


def test_without_a_down_step_the_snapshot_is_restored_after_a_safety_snapshot(live: Project) -> None:
    d = migrations(live.root, down=False)
    with Load(live.proxy_url):
        result = live.run("release", V2, "--migrations", str(d), "--version", "v3")
    assert result.code == 11
    assert "source" not in columns(live)
    [rec] = releases(live)
    assert "migration 0001 has no down step; the database was restored from backup" in rec["reason"]
    safety_id = rec["reason"].split("safety snapshot ")[1].split()[0]
    sets = {s["id"]: s for s in json.loads(live.run("backup", "list", "--json").out)}
    assert sets[safety_id]["kind"] == "safety"
    assert live.run("backup", "verify", safety_id).code == 0
    with sqlite3.connect(Path(sets[safety_id]["path"]) / "database.sqlite", timeout=60) as conn:
        kept = [r[1] for r in conn.execute("PRAGMA table_info(predictions)")]
    assert "source" in kept  # the safety snapshot holds the state the failed release left, nothing is lost
    assert_blue_serves_alone(live)


def test_a_failing_up_migration_changes_nothing(live: Project) -> None:
    d = live.root / "bad"
    d.mkdir()
    (d / "0001_broken.up.sql").write_text("ALTER TABLE no_such_table ADD COLUMN x TEXT;\n")
    result = live.run("release", V2, "--migrations", str(d))
    assert result.code == 11
    assert "failed at migrate: migration 0001_broken (up) failed: no such table: no_such_table" in result.err
    assert "source" not in columns(live) and "x" not in columns(live)
    assert_blue_serves_alone(live)


def test_misnamed_migration_files_are_refused_before_anything(live: Project) -> None:
    d = live.root / "odd"
    d.mkdir()
    (d / "add column.sql").write_text(ADD)
    result = live.run("release", V2, "--migrations", str(d))
    assert result.code == 2
    assert "Error: add column.sql is not a migration file name" in result.err
    assert releases(live) == []


def test_a_full_disk_during_the_snapshot_stops_the_release_before_any_change(live: Project) -> None:
    small = live.root / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        # make the database outgrow 64 KiB
        with sqlite3.connect(live.db_path, isolation_level=None, timeout=60) as conn:
            conn.executemany("INSERT INTO predictions (created_at, model_version, variant, features, prediction,"
                             " score) VALUES ('t', 'v1', 'model', ?, 'setosa', 1)", [("x" * 500,)] * 500)
        d = migrations(live.root)
        before = rows(live)
        result = live.run("release", V2, "--migrations", str(d),
                          env={"BLUEGREEN_BACKUPS__DIR": str(small / "backups")})
        assert result.code == 11
        assert "failed at backup: snapshot of" in result.err and "database or disk is full" in result.err
        assert list((small / "backups").iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert "source" not in columns(live) and rows(live) == before
    [rec] = releases(live)
    assert [(s["name"], s["outcome"]) for s in rec["steps"]] == [("backup", "failed")]
    assert_blue_serves_alone(live)


PY = ("/opt/model/bin/python -c \"import sqlite3; c = sqlite3.connect('/data/app.db', timeout=60);"
      " c.execute('{sql}'); c.commit()\"")


def test_migration_commands_run_in_a_one_off_container_and_the_down_command_reverts(live: Project) -> None:
    up = PY.format(sql="ALTER TABLE predictions ADD COLUMN source TEXT")
    down = PY.format(sql="ALTER TABLE predictions DROP COLUMN source")
    result = live.run("release", V2, "--migrate-up", up, "--migrate-down", down, "--version", "v3")
    assert result.code == 11, result.err
    assert "migration command in a one-off bluegreen-model:v2 container" in result.err
    assert "source" not in columns(live)
    [rec] = releases(live)
    assert rec["reason"].endswith(f"schema reverted by `{down}`")
    assert (rec["steps"][1]["name"], rec["steps"][1]["outcome"]) == ("migrate", "done")
    assert_blue_serves_alone(live)


def test_a_failing_migration_command_stops_the_release_and_names_its_output(live: Project) -> None:
    result = live.run("release", V2, "--migrate-up", "echo 'schema is locked' >&2; exit 3")
    assert result.code == 11
    assert "failed at migrate: migration command `echo 'schema is locked' >&2; exit 3` exited with 3" in result.err
    assert "schema is locked" in result.err
    assert_blue_serves_alone(live)


def test_rolling_back_a_promoted_release_runs_its_down_migration(live: Project) -> None:
    d = migrations(live.root)
    assert live.run("release", V2, "--migrations", str(d)).code == 0
    assert "source" in columns(live)
    with Load(live.proxy_url) as load:  # v2 serves and writes while the column exists
        time.sleep(1)
    written = rows(live)
    result = live.run("rollback")
    assert result.code == 0, result.err
    assert "schema reverted by down migrations 0001" in result.out
    assert "source" not in columns(live) and rows(live) >= written and sum(load.codes.values()) > 0
    again = live.run("rollback")  # back to v2: the column is not re-added, and nothing is reverted twice
    assert again.code == 0 and "schema reverted" not in again.out


@pytest.fixture
def pg_live(project: Project, docker_client: Any) -> Any:
    """Blue serving v1 with its predictions in a fresh PostgreSQL database."""
    import uuid

    import psycopg

    from tests.test_backups_postgres import PG_ADMIN

    name = f"bg_app_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_DATABASE__URL": url})
    assert project.run("up").code == 0
    yield project, url
    project.run("down")
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for (left,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name}_%",)).fetchall():
        admin.execute(f'DROP DATABASE "{left}" WITH (FORCE)')
    admin.close()


def test_a_failed_release_on_postgresql_reverts_its_migration_and_keeps_rows(pg_live: Any) -> None:
    import psycopg

    project, url = pg_live
    d = project.root / "pg-migrations"
    d.mkdir()
    (d / "0001_add_source.up.sql").write_text(ADD)
    (d / "0001_add_source.down.sql").write_text(DROP)
    with Load(project.proxy_url) as load:
        result = project.run("release", V2, "--migrations", str(d), "--version", "v3")
    assert result.code == 11, result.err
    with psycopg.connect(url) as conn:
        cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_name = 'predictions'").fetchall()]
        stored = conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
    assert "source" not in cols
    assert stored >= load.codes[200] > 0  # every answered prediction is in PostgreSQL
    sets = json.loads(project.run("backup", "list", "--json").out)
    assert sets[0]["database"]["engine"] == "postgresql" and "***" in sets[0]["database"]["source"]
    assert_blue_serves_alone(project)
