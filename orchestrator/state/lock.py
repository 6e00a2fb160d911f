"""The deployment lock: one changing operation at a time, never held by a dead process.

It is an exclusive ``flock`` on ``<state>/lock``: the kernel drops it when the holder exits,
however it exits, so a crashed holder cannot keep it. The file also records who holds it
(actor, pid, operation, since) for the "locked by …" message; a record left behind by a
holder that died is reported as a stale lock and cleared by the next acquirer.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.errors import LockHeld, StateError


@dataclass(frozen=True)
class LockHolder:
    actor: str
    pid: int
    operation: str
    since: str

    def describe(self) -> str:
        return f"{self.actor} (pid {self.pid}, bluegreen {self.operation}) since {self.since}"


# Operations that hold the lock only briefly (the watcher's housekeeping pass): an acquirer waits up
# to BRIEF_WAIT for them instead of being refused, so a rollback never loses a race with the watcher.
BRIEF_OPERATIONS = frozenset({"watch"})
BRIEF_WAIT = 10.0


class DeploymentLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self.stale: LockHolder | None = None  # set when acquiring cleared a dead holder's record

    def acquire(self, operation: str, actor: str) -> DeploymentLock:
        try:
            private_dir(self.path.parent)
            fh = open(self.path, "a+")  # noqa: SIM115 - kept open for as long as the lock is held
        except OSError as exc:
            raise StateError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        deadline = time.monotonic() + BRIEF_WAIT
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read(fh)
                # No record yet: the holder is between taking the lock and writing who it is.
                if (holder is None or holder.operation in BRIEF_OPERATIONS) and time.monotonic() < deadline:
                    time.sleep(0.005)
                    continue
                fh.close()
                who = holder.describe() if holder else "another bluegreen process"
                raise LockHeld(f"locked by {who}") from None
        self.stale = _read(fh)
        holder = LockHolder(actor=actor, pid=os.getpid(), operation=operation,
                            since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(asdict(holder)))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.flush()
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None

    def __enter__(self) -> DeploymentLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def current_holder(path: Path) -> LockHolder | None:
    """Who holds the lock now, or None when it is free (a dead holder's record counts as free).

    Reads the holder record without touching the lock itself: probing with a shared lock would
    make an operator's `status` refuse a release that starts at the same instant.
    """
    try:
        with open(path) as fh:
            holder = _read(fh)
    except FileNotFoundError:
        return None
    if holder is None:
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user
    return holder


def _read(fh: IO[str]) -> LockHolder | None:
    fh.seek(0)
    text = fh.read().strip()
    if not text:
        return None
    try:
        return LockHolder(**json.loads(text))
    except (ValueError, TypeError):
        return None
