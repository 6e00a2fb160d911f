"""Backup sets of a real PostgreSQL server (pg_dump, pg_restore): restore, refusal of a damaged set."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bluegreen.backups.sets import BackupStore, Sources
from bluegreen.orchestrator.errors import BackupError

PG_ADMIN = os.environ.get("BLUEGREEN_TEST_PG", "postgresql://bluegreen:bluegreen@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the real server; fails (never skips) when PostgreSQL is not running."""
    name = f"bg_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is required (scripts/provision.sh starts it): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)")
        conn.execute("INSERT INTO items (note) SELECT 'row ' || g FROM generate_series(1, 500) g")
    yield url
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for (leftover,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                     (f"{name}_%",)).fetchall():
        admin.execute(f'DROP DATABASE "{leftover}" WITH (FORCE)')
    admin.close()


def pg_count(url: str, where: str = "true") -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute(f"SELECT count(*) FROM items WHERE {where}").fetchone()[0])


def test_postgresql_marker_survives_a_restore_and_the_password_never_shows(pg_url: str, tmp_path: Path) -> None:
    store = BackupStore(tmp_path / "backups", Sources(pg_url, None, {}))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO items (note) VALUES ('marker')")
    backup = store.create()
    db = backup.manifest["database"]
    assert (db["engine"], db["row_counts"], db["source"].count("***")) == ("postgresql", {"items": 501}, 1)
    assert db["server_version"].split(".")[0].isdigit()
    assert "bluegreen:bluegreen" not in (backup.path / "manifest.json").read_text()
    assert store.verify(backup.id).ok
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM items")
    _restored, safety = store.restore(backup.id)
    assert pg_count(pg_url, "note = 'marker'") == 1 and pg_count(pg_url) == 501
    assert json.loads((safety.path / "manifest.json").read_text())["database"]["row_counts"] == {"items": 0}
    assert store.verify(safety.id).ok


def test_postgresql_flipped_byte_is_refused(pg_url: str, tmp_path: Path) -> None:
    store = BackupStore(tmp_path / "backups", Sources(pg_url, None, {}))
    backup = store.create()
    dump = backup.path / "database.dump"
    data = bytearray(dump.read_bytes())
    data[-10] ^= 0xFF
    dump.write_bytes(bytes(data))
    assert store.verify(backup.id).problems == ["database.dump does not match its sha256 in the manifest"]
    with pytest.raises(BackupError):
        store.restore(backup.id)
    assert pg_count(pg_url) == 500
