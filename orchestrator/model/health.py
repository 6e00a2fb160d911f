"""Health polling with a deadline and backoff, and a one-shot probe for ``status``.

While waiting, the container is checked on every round: a container that exits fails the
wait at once (with its exit code) instead of burning the whole timeout.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from bluegreen.orchestrator.common import plainhttp
from bluegreen.orchestrator.errors import EnvironmentFailed


@dataclass(frozen=True)
class Probe:
    healthy: bool
    status_code: int | None
    version: str | None
    error: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(base_url: str, timeout: float = 1.0, path: str = "/health", expect: int = 200) -> Probe:
    """GET the readiness path once: healthy when it answers ``expect``.

    A single plain GET over a socket: ``status`` and ``rollback`` probe colours on every run and
    must not pay for importing an HTTP stack.
    """
    start = time.monotonic()
    url = urlsplit(base_url)
    try:
        code, body = plainhttp.get(path, host=url.hostname or "127.0.0.1", port=url.port or 80, timeout=timeout)
    except plainhttp.HTTPFailure as exc:
        return Probe(False, None, None, str(exc), time.monotonic() - start)
    version = None
    with contextlib.suppress(ValueError, AttributeError):
        version = json.loads(body).get("version")
    ok = code == expect
    return Probe(ok, code, version, None if ok else f"HTTP {code}", time.monotonic() - start)


def wait_healthy(
    name: str,
    base_url: str,
    timeout: float,
    container_problem: Callable[[], str | None],
    logs: Callable[[], str] = lambda: "",
    first_delay: float = 0.05,
    max_delay: float = 0.2,
    path: str = "/health",
    expect: int = 200,
) -> float:
    """Poll until the readiness path answers ``expect``; return the seconds it took.

    ``container_problem`` returns a reason when the container is gone or has exited.
    Raises EnvironmentFailed with the last answer and the container's last log lines.
    """
    start = time.monotonic()
    deadline = start + timeout
    delay = first_delay
    last = "no answer yet"
    while True:
        problem = container_problem()
        if problem:
            raise EnvironmentFailed(f"{name} {problem} before becoming healthy{_with_logs(logs())}",
                                    f"bluegreen logs {name}   (runbooks/failed-start.md)")
        result = probe(base_url, timeout=min(1.0, max(0.1, deadline - time.monotonic())), path=path, expect=expect)
        if result.healthy:
            return time.monotonic() - start
        last = result.error or "unhealthy"
        if time.monotonic() + delay > deadline:
            raise EnvironmentFailed(
                f"{name} did not become healthy in {timeout:g}s (last answer: {last}){_with_logs(logs())}",
                f"bluegreen logs {name}   (runbooks/failed-start.md)",
            )
        time.sleep(delay)
        delay = min(max_delay, delay * 2)


def _with_logs(text: str) -> str:
    if not text:
        return ""
    lines = text.splitlines()[-8:]
    return "\n  last log lines:\n    " + "\n    ".join(lines)
