"""The state database: live colour, environments and an audit row for every action."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.orchestrator.errors import EnvironmentFailed
from bluegreen.orchestrator.state import StateStore


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
