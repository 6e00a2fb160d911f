"""The deployment lock: one holder at a time, and a dead holder never keeps it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bluegreen.orchestrator.errors import LockHeld
from bluegreen.orchestrator.state.lock import DeploymentLock, current_holder

HOLD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from bluegreen.orchestrator.state.lock import DeploymentLock
    lock = DeploymentLock(Path(sys.argv[1])).acquire("release", "alice@ops")
    print("held", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), 9)
    time.sleep(60)
""")


def hold_in_child(path: Path, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(path), mode], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    assert child.stdout is not None
    child.stdout.close()


def test_a_second_acquirer_is_told_who_holds_the_lock_and_since_when(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    child = hold_in_child(path, "hold")
    try:
        with pytest.raises(LockHeld) as info:
            DeploymentLock(path).acquire("up", "bob@ops")
        message = info.value.message
        assert message.startswith(f"locked by alice@ops (pid {child.pid}, bluegreen release) since 20")
        assert info.value.exit_code == 3
        holder = current_holder(path)
        assert holder is not None and holder.pid == child.pid and holder.operation == "release"
    finally:
        stop(child)


def test_a_lock_whose_holder_was_killed_is_cleared_and_reported_as_stale(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    child = hold_in_child(path, "die")
    stop(child)
    assert child.returncode == -signal.SIGKILL
    assert current_holder(path) is None  # the kernel dropped the flock with the process
    lock = DeploymentLock(path).acquire("up", "bob@ops")
    try:
        assert lock.stale is not None
        assert (lock.stale.actor, lock.stale.pid, lock.stale.operation) == ("alice@ops", child.pid, "release")
        holder = current_holder(path)
        assert holder is not None and holder.pid == os.getpid() and holder.actor == "bob@ops"
    finally:
        lock.release()
    assert current_holder(path) is None


def test_release_frees_the_lock_for_the_next_operation(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with DeploymentLock(path).acquire("up", "a"), pytest.raises(LockHeld):
        DeploymentLock(path).acquire("down", "b")
    with DeploymentLock(path).acquire("down", "b") as lock:
        assert lock.stale is None


def test_an_acquirer_waits_for_the_watchers_brief_hold_instead_of_being_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback that meets `serve`'s housekeeping pass waits for it; a release's hold is refused at once."""
    import threading

    from bluegreen.orchestrator.state import lock as lock_module

    path = tmp_path / "lock"
    waiting = threading.Event()
    real_sleep = lock_module.time.sleep

    def sleep(seconds: float) -> None:
        waiting.set()  # the acquirer found the lock held and is waiting for it
        real_sleep(seconds)

    monkeypatch.setattr(lock_module.time, "sleep", sleep)
    watch = DeploymentLock(path).acquire("watch", "serve")
    outcome: list[object] = []

    def rollback() -> None:
        try:
            outcome.append(DeploymentLock(path).acquire("rollback", "api@127.0.0.1"))
        except LockHeld as exc:
            outcome.append(exc)

    thread = threading.Thread(target=rollback)
    thread.start()
    assert waiting.wait(timeout=30)
    watch.release()
    thread.join(timeout=30)
    [got] = outcome
    assert isinstance(got, DeploymentLock)
    holder = current_holder(path)
    assert holder is not None and holder.operation == "rollback"
    got.release()

    waiting.clear()
    child = hold_in_child(path, "hold")  # a release: refused without waiting
    try:
        with pytest.raises(LockHeld, match="bluegreen release"):
            DeploymentLock(path).acquire("rollback", "bob@ops")
        assert not waiting.is_set()
    finally:
        stop(child)
