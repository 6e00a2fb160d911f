"""Fixtures: a real Docker engine, real HAProxy, and a deployment directory per test.

There are no skips: a test that needs the engine, HAProxy or the images fails when they are
missing (the test command, scripts/test.sh, installs and starts them first).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from bluegreen.orchestrator.common.ports import free_ports

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.serving", "tests.wheel"]  # `served` (bluegreen serve before a deployment); the wheel
BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Project:
    """A deployment directory with its own ports and project name, and a way to run the CLI in it."""

    root: Path
    name: str
    proxy_port: int
    blue_port: int
    green_port: int
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        full_env = {**os.environ, **self.env, **(env or {})}
        proc = subprocess.run([*BLUEGREEN, *args], cwd=self.root, env=full_env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def db_path(self) -> Path:
        return self.root / "data" / "app.db"

    def write_config(self, **extra: str) -> None:
        text = (REPO / "orchestrator" / "settings" / "default.toml").read_text()
        text = text.replace('project = "bluegreen"', f'project = "{self.name}"')
        text = text.replace("port = 8080", f"port = {self.proxy_port}")
        text = text.replace("port = 8101", f"port = {self.blue_port}")
        text = text.replace("port = 8102", f"port = {self.green_port}")
        text = text.replace("check_interval_ms = 1000", "check_interval_ms = 300")
        (self.root / "bluegreen.toml").write_text(text)


def _cleanup_project(project: Project) -> None:
    """Remove every container and proxy process of the project, even after a failed test."""
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={project.name}"],
                            capture_output=True, text=True)
    names = [f"{project.name}-blue", f"{project.name}-green", *listed.stdout.split()]
    subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
    for pid_file in (project.root / ".bluegreen" / "haproxy" / "haproxy.pid",
                     project.root / ".bluegreen" / "haproxy" / "haproxy-2.pid",
                     project.root / ".bluegreen" / "nginx" / "nginx.pid",
                     project.root / ".bluegreen" / "litestream" / "litestream.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proxy_port, blue_port, green_port = free_ports(3)
    p = Project(root=tmp_path, name=f"t{uuid.uuid4().hex[:10]}", proxy_port=proxy_port,
                blue_port=blue_port, green_port=green_port, env={"BLUEGREEN_ACTOR": "tester"})
    p.write_config()
    yield p
    _cleanup_project(p)


@pytest.fixture
def no_bluegreen_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test sees no BLUEGREEN_* variable of the environment it runs in."""
    for key in list(os.environ):
        if key.startswith("BLUEGREEN_"):
            monkeypatch.delenv(key)


def write_settings(directory: Path, text: str) -> Path:
    """``directory/bluegreen.toml`` with ``text``; its path."""
    path = directory / "bluegreen.toml"
    path.write_text(text)
    return path


def component_missing(message: str) -> NoReturn:
    """A component a test needs is not here: a failure under CI=true (CI must have it), a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    """The real engine; fails (never skips) when it does not answer."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"a Docker engine is required (scripts/provision.sh starts one): {exc}")
    for ref in ("bluegreen-model:v1", "bluegreen-model:v2", "bluegreen-regressor:v1", "bluegreen-regressor:v2"):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            pytest.fail(f"{ref} is missing: run bluegreen images build --all")
    return client


@pytest.fixture(scope="session")
def example_images(docker_client):  # type: ignore[no-untyped-def]
    """The third-party example servers (MLflow, MLServer); fails when they were not built."""
    import docker

    for ref in ("bluegreen-mlflow:v1", "bluegreen-mlflow:v2", "bluegreen-mlserver:v1", "bluegreen-mlserver:v2"):
        try:
            docker_client.images.get(ref)
        except docker.errors.ImageNotFound:
            pytest.fail(f"{ref} is missing: run bluegreen images build --examples")
    return docker_client


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def haproxy_processes(project: Project) -> list[int]:
    """Live haproxy processes started with this project's config file."""
    cfg = str(project.root / ".bluegreen" / "haproxy" / "haproxy.cfg")
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"haproxy") and cfg.encode() in cmd and state != "Z":
            pids.append(int(proc.name))
    return pids


class Traffic:
    """POST /predict through the proxy from a thread until stopped; every answer that is not a 200 counts."""

    def __init__(self, url: str, pause: float = 0.02, headers: dict[str, str] | None = None) -> None:
        import threading

        self.url, self.pause, self.sent, self.failed = url, pause, 0, 0
        self.headers = headers or {}
        self.versions: dict[str, int] = {}  # model_version -> answers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=10, headers=self.headers) as client:
            while not self._stop.wait(self.pause):
                try:
                    answer = client.post(f"{self.url}/predict", json={"features": [5.9, 3.0, 5.1, 1.8]})
                    ok = answer.status_code == 200
                    if ok:
                        version = str(answer.json().get("model_version"))
                        self.versions[version] = self.versions.get(version, 0) + 1
                except (httpx.HTTPError, ValueError):
                    ok = False
                self.sent += 1
                self.failed += not ok

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Connection:
    """One client on one kept-alive connection, GET in a loop until stopped: when each good answer came,
    and each failure.

    After a failure it opens its next connection only once ``reconnect`` is set (when given): a test
    that kills a proxy process sets it when the process is gone, so that the next connection cannot
    land in the listener the kernel is still tearing down (a race of the kernel's, measured apart by
    bench/proxy_kill.py)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None,
                 reconnect: threading.Event | None = None) -> None:
        self.url, self.headers, self.reconnect = url, headers or {}, reconnect
        self.ok: list[float] = []
        self.why: list[tuple[float, str]] = []  # each failure: when, and what the client saw
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        # One connection at most: a failure then a new connection is the client's whole story.
        with httpx.Client(timeout=5, headers=self.headers, limits=httpx.Limits(max_connections=1)) as client:
            while not self._stop.wait(0.005):
                try:
                    r = client.get(self.url)
                    good = r.status_code == 200
                    why = f"{r.status_code} {r.text[:60]!r}"
                except httpx.HTTPError as exc:
                    good = False
                    why = repr(exc)
                if good:
                    self.ok.append(time.monotonic())
                else:
                    self.why.append((time.monotonic(), why))
                    if self.reconnect is not None:
                        self.reconnect.wait(30)

    def ok_since(self, t: float) -> int:
        return sum(1 for when in self.ok if when > t)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
