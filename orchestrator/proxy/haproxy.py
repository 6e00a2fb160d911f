"""HAProxy driver: weights changed live through the runtime API on a unix socket.

The config file is rewritten (atomically) with every change too, so a restart of HAProxy keeps
the weights. Weights are read back from HAProxy itself, never assumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.ports import require_free
from bluegreen.orchestrator.private import private_dir
from bluegreen.orchestrator.proxy.base import Backend, ServerStats, check_weights, run_tool, stop_process
from bluegreen.orchestrator.proxy.base import output_tail as _tail

BACKEND = "models"
MAX_SOCKET_PATH = 97  # HAProxy refuses longer unix socket paths ("too long (max 97)")

CONFIG = """\
# Written by bluegreen. Weights change live through the runtime API and are saved here,
# so a restart keeps them. Edit bluegreen.toml, not this file.
global
    stats socket {socket} mode 600 level admin
    maxconn 4096
    hard-stop-after 30s

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    option redispatch
    retries 3
    retry-on conn-failure empty-response

frontend models_in
    bind {listen}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET {check_path}
    http-check expect status {check_status}
    default-server inter {inter}ms fastinter {fastinter}ms fall 2 rise 1
{servers}
"""


class HAProxy:
    """One HAProxy process per deployment, its files under ``<state>/haproxy``."""

    name = "haproxy"

    def __init__(self, directory: Path, host: str, port: int, backends: list[Backend],
                 binary: str = "haproxy", check_interval_ms: int = 1000, check_path: str = "/health",
                 check_status: int = 200) -> None:
        self.directory = directory
        self.check_path = check_path
        self.check_status = check_status
        self.host = host
        self.port = port
        self.backends = backends
        self.binary = binary
        self.check_interval_ms = check_interval_ms
        self.config_path = directory / "haproxy.cfg"
        self.pid_path = directory / "haproxy.pid"
        self.socket_path = _socket_path(directory)

    # -- config ------------------------------------------------------------------------------
    def render(self, weights: dict[str, int]) -> str:
        servers = "\n".join(
            f"    server {b.name} {b.host}:{b.port} weight {weights.get(b.name, 0)} check" for b in self.backends
        )
        return CONFIG.format(socket=self.socket_path, listen=f"{self.host}:{self.port}", backend=BACKEND,
                             inter=self.check_interval_ms, fastinter=max(100, self.check_interval_ms // 4),
                             check_path=self.check_path, check_status=self.check_status,
                             servers=servers)

    def _write_config(self, weights: dict[str, int]) -> None:
        private_dir(self.directory)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(self.render(weights))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.config_path)

    # -- process -----------------------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"haproxy" in cmdline and str(self.config_path).encode() in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, weights: dict[str, int]) -> None:
        """Write the config, check it, and start HAProxy in the background; wait for its socket."""
        check_weights(weights, [b.name for b in self.backends])
        require_free(self.host, self.port, "proxy.port")
        self._write_config(weights)
        check = self._run([self.binary, "-c", "-f", str(self.config_path)])
        if check.returncode != 0:
            raise ProxyError(f"haproxy rejected {self.config_path}: {_tail(check)}")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        started = self._run([self.binary, "-D", "-f", str(self.config_path), "-p", str(self.pid_path)])
        if started.returncode != 0:
            raise ProxyError(f"haproxy did not start: {_tail(started)}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.command("show info")
                return
            except ProxyError:
                time.sleep(0.05)
        raise ProxyError(f"haproxy started but its runtime socket {self.socket_path} does not answer")

    def stop(self, timeout: float = 10.0) -> None:
        """Soft-stop (finish open requests), then terminate if it lingers."""
        pid = self.pid()
        if pid is None:
            return
        stop_process(pid, signal.SIGUSR1, timeout, "haproxy")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run_tool(argv, f"the haproxy binary {self.binary!r} is not installed",
                        "apt-get install haproxy, or set proxy.binary in bluegreen.toml")

    # -- runtime API -------------------------------------------------------------------------
    def command(self, line: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise ProxyError(f"haproxy's runtime socket {self.socket_path} does not answer: {exc}") from None
        return b"".join(chunks).decode()

    def set_weights(self, weights: dict[str, int]) -> None:
        """Apply weights live, then save them in the config file."""
        check_weights(weights, [b.name for b in self.backends])
        for name, weight in weights.items():
            answer = self.command(f"set weight {BACKEND}/{name} {weight}").strip()
            if answer:
                raise ProxyError(f"haproxy refused weight {weight} for {name}: {answer}")
        self._write_config(weights)

    def weights(self) -> dict[str, int]:
        out = {}
        for backend in self.backends:
            answer = self.command(f"get weight {BACKEND}/{backend.name}").strip()
            try:
                out[backend.name] = int(answer.split()[0])
            except (ValueError, IndexError):
                raise ProxyError(f"unexpected answer from haproxy for {backend.name}'s weight: {answer!r}") from None
        return out

    def stats(self) -> dict[str, ServerStats]:
        text = self.command("show stat")
        lines = [line for line in text.splitlines() if line]
        if not lines or not lines[0].startswith("# "):
            raise ProxyError(f"unexpected answer to 'show stat': {text[:200]!r}")
        header = lines[0][2:].split(",")
        out = {}
        names = {b.name for b in self.backends}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == BACKEND and row.get("svname") in names:
                out[row["svname"]] = ServerStats.from_haproxy(row)
        return out


def _socket_path(directory: Path) -> Path:
    path = directory / "admin.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return Path("/tmp") / f"bluegreen-haproxy-{digest}.sock"
