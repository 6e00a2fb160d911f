"""The state database: live colour, environments and an audit row for every action."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.orchestrator.errors import EnvironmentFailed
from bluegreen.orchestrator.state.store import StateStore


def test_live_colour_weights_and_environments_survive_reopening(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    assert store.live_color() is None and store.weights() == {}
    store.set_live("green", {"blue": 0, "green": 100})
    store.record_environment("green", "m:v2", "v2", "abc123", 8102)
    store.close()
    again = StateStore(tmp_path / "state.db")
    assert again.live_color() == "green"
    assert again.weights() == {"blue": 0, "green": 100}
    env = again.environment("green")
    assert env is not None and (env.image, env.version, env.container_id, env.port) == ("m:v2", "v2", "abc123", 8102)
    assert again.environment("blue") is None


def test_every_action_leaves_an_audit_row_with_its_outcome(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    with store.action("alice", "up", {"color": "blue"}) as entry:
        entry.notes.append("started blue")
    with pytest.raises(EnvironmentFailed), store.action("bob", "up"):
        raise EnvironmentFailed("blue did not become healthy in 1s")
    with pytest.raises(KeyboardInterrupt), store.action("carol", "down"):
        raise KeyboardInterrupt
    newest_first = store.history()
    assert [(e.actor, e.action, e.outcome, e.detail) for e in newest_first] == [
        ("carol", "down", "interrupted", "interrupted by the operator"),
        ("bob", "up", "failed", "blue did not become healthy in 1s"),
        ("alice", "up", "ok", "started blue"),
    ]
    assert newest_first[2].args == {"color": "blue"}
    assert all(e.finished_at and e.duration_s is not None for e in newest_first)


def test_an_action_cut_short_shows_as_running(tmp_path: Path) -> None:
    """A process killed mid-action never completes its row; the log shows it was cut short."""
    store = StateStore(tmp_path / "state.db")
    ctx = store.action("alice", "up")
    ctx.__enter__()  # the block never ends, as if the process had been killed
    [entry] = StateStore(tmp_path / "state.db").history()
    assert (entry.outcome, entry.finished_at) == ("running", None)


def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.set_live("blue", {"blue": 100, "green": 0})
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('live_color', 'green')")
        raise RuntimeError("crash between two writes")
    assert store.live_color() == "blue"


def test_opening_another_store_in_the_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    """A second store in the process must not drop the POSIX locks SQLite holds for the first.

    Closing any other descriptor on the file would: another process closing its connection then
    believes it is the last user, checkpoints and deletes the write-ahead log under the first
    store's feet (how `serve`, with many stores and threads, once corrupted its state file).
    Opening a store also never waits for another store's write transaction.
    """
    import subprocess
    import sys

    path = tmp_path / "state.db"
    first = StateStore(path)
    first.set_live("blue", {"blue": 100, "green": 0})
    assert Path(f"{path}-wal").exists()
    with first.transaction():
        second = StateStore(path)
        assert second.live_color() == "blue"  # read at once, although the first holds the write lock
        refused = subprocess.run([sys.executable, "-c",
                                  "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0, "
                                  "isolation_level=None); c.execute('BEGIN IMMEDIATE')", str(path)],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "database is locked" in refused.stderr
    reader = subprocess.run([sys.executable, "-c",
                             "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                             "print(c.execute('SELECT count(*) FROM meta').fetchone()[0]); c.close()", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert reader.returncode == 0, reader.stderr
    assert Path(f"{path}-wal").exists(), "the other process took itself for the last user of the file"
    first.set_live("green", {"blue": 0, "green": 100})
    assert (second.live_color(), oct(path.stat().st_mode & 0o777)) == ("green", "0o600")


def test_one_store_is_shared_by_threads_without_interleaving_their_transactions(tmp_path: Path) -> None:
    import threading

    store = StateStore(tmp_path / "state.db")
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(50):
                with store.action(f"t{n}", "drill", {"i": i}) as entry:
                    entry.notes.append("done")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    rows = store.query("SELECT outcome, COUNT(*) AS n FROM audit GROUP BY outcome")
    assert [(r["outcome"], r["n"]) for r in rows] == [("ok", 400)]
