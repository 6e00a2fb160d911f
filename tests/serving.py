"""`bluegreen serve` for the tests: started on a port with a token, stopped, and a deployment behind it."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BLUEGREEN, Project, free_ports, wait_for

TOKEN = "t0k3n-for-the-tests-0123456789"
LOGS: dict[int, Any] = {}  # serve's output files, by pid, closed when it is stopped


@dataclass
class Served:
    project: Project
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def live(self) -> tuple[str, str]:
        s = self.call("GET", "/api/status").json()
        return s["live"], s["environments"][s["live"]]["version"]


def alertmanager_payload(n: int = 1, labels: dict[str, str] | None = None, status: str = "firing",
                         group: str = "g1") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) with ``n`` alerts."""
    return {"version": "4", "groupKey": group, "status": status, "receiver": "bluegreen",
            "alerts": [{"status": status, "labels": {"alertname": "ModelErrors", "severity": "critical",
                                                     "instance": f"i{i}", **(labels or {})},
                        "startsAt": "2026-11-25T10:00:00Z", "fingerprint": f"fp{i:04d}"} for i in range(n)]}


def start_serve(project: Project, port: int, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path]:
    log = project.root / f"serve-{port}.log"
    full = {**os.environ, **project.env, "BLUEGREEN_SERVE__TOKEN": TOKEN, **(env or {})}
    out = open(log, "w")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen([*BLUEGREEN, "serve", "--port", str(port)], cwd=project.root, env=full,
                            stdout=out, stderr=subprocess.STDOUT, text=True)
    LOGS[proc.pid] = out
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None  # stop waiting if it died

    assert wait_for(up, timeout=30), log.read_text()
    assert proc.poll() is None, log.read_text()
    return proc, log


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = LOGS.pop(proc.pid, None)
    if out is not None:
        out.close()


@pytest.fixture
def served(project: Project, docker_client: Any) -> Iterator[Served]:
    """v2 live on green after a release, v1 warm on blue; serve running with a token."""
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_SERVE__WATCH_INTERVAL": "1s"})
    assert project.run("up").code == 0
    assert project.run("release", "bluegreen-model:v2", "--steps", "100").code == 0
    (port,) = free_ports(1)
    proc, log = start_serve(project, port)
    yield Served(project, f"http://127.0.0.1:{port}", proc, log)
    stop(proc)


