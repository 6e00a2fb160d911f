"""Directories that only their owner may list: state, proxy files, backups.

The state directory holds the audit log, release settings and backups; nobody else on the host
needs to list it. ``mkdir``'s mode is filtered by the umask, so the mode is set explicitly, and a
directory an earlier version created wider is tightened the next time it is used.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE = 0o700


def private_dir(path: Path) -> Path:
    """Make ``path`` (and any parents that do not exist yet) a directory with mode 0700; return it."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE, exist_ok=True)
        os.chmod(directory, PRIVATE)
    st = path.stat()
    if st.st_mode & 0o777 != PRIVATE and st.st_uid == os.getuid():
        os.chmod(path, PRIVATE)
    return path
