"""Config-file snapshots and the small file-system helpers every snapshotter shares."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from bluegreen.orchestrator.errors import BackupError


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def copy_file(source: Path, dest: Path) -> None:
    """Copy a (small, not live-written) config file: partial file, fsync, rename, 0600."""
    partial = dest.with_name(dest.name + ".partial")
    try:
        shutil.copyfile(source, partial)
        os.chmod(partial, 0o600)
        fsync_file(partial)
        os.replace(partial, dest)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"copying {source} failed: {exc}", "check free space (df -h) and permissions") from None
