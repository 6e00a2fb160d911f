"""Keeping the proxy process alive: in a container with a restart policy, or as a host daemon.

``ContainerSupervisor`` (the default) runs the proxy in a container of the ``bluegreen-proxy``
image with host networking and ``--restart unless-stopped``, its files on a bind mount at the
same path, as kamal-proxy runs: a killed proxy process, a restarted Docker engine or a rebooted
host brings it back with the config it last wrote, weights included, with no command.
``ProcessSupervisor`` runs it as a daemon on the host (its binary must be installed there); a
killed daemon stays dead until ``bluegreen up``. A proxy of several processes (``processes``) has a
supervisor for each: ``sibling(n)`` names the n-th (``<name>-n``, ``<pid file>-n``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.proxy.base import process_alive, run_tool, stop_process

PROXY_IMAGE = "bluegreen-proxy:latest"


class Supervisor(Protocol):
    kind: str

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None: ...
    def running(self) -> bool: ...
    def send_signal(self, sig: signal.Signals) -> None: ...
    def stop(self, graceful: signal.Signals, timeout: float) -> None: ...
    def check(self, argv: list[str]) -> subprocess.CompletedProcess[str]: ...
    def sibling(self, number: int) -> Supervisor:
        """The supervisor of the proxy's ``number``-th process (2, 3, …), beside this one (the first)."""
        ...


def numbered(path: Path, number: int) -> Path:
    """``haproxy.pid`` for the first process of a proxy, ``haproxy-2.pid`` for the second, …"""
    return path if number == 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")


class ProcessSupervisor:
    """A daemon on the host that writes its pid file; found again by pid and command line."""

    kind = "process"

    def __init__(self, pid_path: Path, marker: str, name: str, missing_hint: str) -> None:
        self.pid_path = pid_path
        self.marker = marker  # a string its command line contains (the config path)
        self.name = name
        self.missing_hint = missing_hint

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        if self.name.encode() in cmdline and self.marker.encode() in cmdline and process_alive(pid):
            return pid
        return None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        started = run_tool(argv, f"the {self.name} binary {argv[0]!r} is not installed", self.missing_hint,
                           {**os.environ, **env} if env else None)
        if started.returncode != 0:
            text = (started.stderr or started.stdout or "").strip().splitlines()
            raise ProxyError(f"{self.name} did not start: {text[-1] if text else started.returncode}")

    def running(self) -> bool:
        return self.pid() is not None

    def send_signal(self, sig: signal.Signals) -> None:
        pid = self.pid()
        if pid is None:
            raise ProxyError(f"{self.name} is not running", "bluegreen up")
        os.kill(pid, sig)

    def stop(self, graceful: signal.Signals, timeout: float) -> None:
        pid = self.pid()
        if pid is not None:
            stop_process(pid, graceful, timeout, self.name)

    def check(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run_tool(argv, f"the {self.name} binary {argv[0]!r} is not installed", self.missing_hint)

    def sibling(self, number: int) -> ProcessSupervisor:
        return ProcessSupervisor(numbered(self.pid_path, number), self.marker, self.name, self.missing_hint)


class ContainerSupervisor:
    """The proxy in a container named ``<project>-proxy``: host network, restart policy, bind mounts."""

    kind = "container"

    def __init__(self, runtime: Any, name: str, mounts: list[Path], image: str = PROXY_IMAGE) -> None:
        self.runtime = runtime
        self.name = name
        self.mounts = mounts
        self.image = image

    def _volumes(self) -> dict[str, dict[str, str]]:
        return {str(m): {"bind": str(m), "mode": "rw"} for m in self.mounts}

    def _container(self) -> Any:
        import docker

        try:
            return self.runtime.client.containers.get(self.name)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, OSError) as exc:
            raise ProxyError(f"docker could not inspect the proxy container {self.name}: {exc}") from None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        import docker

        self.runtime.require_image(self.image)
        old = self._container()
        if old is not None:
            with contextlib.suppress(docker.errors.DockerException):
                old.remove(force=True)
        try:
            self.runtime.client.containers.run(
                self.image, argv, name=self.name, detach=True, network_mode="host",
                restart_policy={"Name": "unless-stopped"}, volumes=self._volumes(), environment=env or {},
                user=f"{os.getuid()}:{os.getgid()}", labels={"bluegreen.project": self.runtime.project,
                                                            "bluegreen.role": "proxy"})
        except (docker.errors.DockerException, OSError) as exc:
            raise ProxyError(f"docker could not start the proxy container {self.name}: {exc}") from None

    def running(self) -> bool:
        from bluegreen.environments.engine_api import EngineUnavailable, inspect_container, unix_socket_path

        socket_path = unix_socket_path(self.runtime.host)
        if socket_path is not None:  # the hot path (status, rollback): one engine GET, no SDK import
            try:
                attrs = inspect_container(socket_path, self.name, self.runtime.timeout)
            except EngineUnavailable:
                return False
            return bool(attrs and attrs.get("State", {}).get("Running"))
        container = self._container()
        return bool(container is not None and container.status == "running")

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the proxy process from inside its container (a reload).

        Not through Docker's kill API: the engine counts any signal sent that way as a manual stop,
        and would then no longer restart the container when the proxy crashes.
        """
        import docker

        container = self._container()
        if container is None:
            raise ProxyError(f"the proxy container {self.name} does not exist", "bluegreen up")
        try:
            code, output = container.exec_run(["sh", "-c", f"kill -s {sig.name[3:]} 1"])
        except (docker.errors.DockerException, OSError) as exc:
            raise ProxyError(f"docker could not signal the proxy container {self.name}: {exc}") from None
        if code != 0:
            raise ProxyError(f"signalling the proxy in {self.name} failed: {output.decode(errors='replace')}")

    def stop(self, graceful: signal.Signals, timeout: float) -> None:
        """Stop for good: no restart, the graceful signal, then remove (forcing it if it lingers)."""
        import docker

        container = self._container()
        if container is None:
            return
        try:
            container.update(restart_policy={"Name": "no"})
            if container.status == "running":
                container.kill(signal=int(graceful))
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    container.reload()
                    if container.status != "running":
                        break
                    time.sleep(0.05)
            container.remove(force=True)
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, OSError) as exc:
            raise ProxyError(f"docker could not stop the proxy container {self.name}: {exc}") from None

    def check(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a command of the proxy image once (a config check) and return what it printed."""
        from bluegreen.environments.runtime import Mount

        code, output = self.runtime.run_once(self.image, argv, {}, tuple(Mount(str(m), str(m)) for m in self.mounts),
                                             timeout=60.0)
        return subprocess.CompletedProcess(argv, code, output, "")

    def sibling(self, number: int) -> ContainerSupervisor:
        return ContainerSupervisor(self.runtime, f"{self.name}-{number}", self.mounts, self.image)
