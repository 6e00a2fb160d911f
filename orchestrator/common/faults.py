"""Fault injection for crash-safety tests and drills, at the journaled points of a change.

``BLUEGREEN_FAULT_CRASH_AT=<step>:<before|after>`` kills the process with SIGKILL at that point,
as a power cut or an OOM kill would; the journal must then be enough to recover.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = "BLUEGREEN_FAULT_CRASH_AT"


def crash_point(step: str, phase: str) -> None:
    if os.environ.get(CRASH_AT) == f"{step}:{phase}":
        os.kill(os.getpid(), signal.SIGKILL)
