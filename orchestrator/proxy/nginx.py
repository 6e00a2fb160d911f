"""nginx driver: weights rendered into an upstream block, checked with ``nginx -t``, then reloaded.

A config that fails ``nginx -t`` is never put in place. Open-source nginx has no API to read
weights or per-server counters, so ``weights`` reads the config the running master loaded (the
file is only ever replaced by a tested config followed by a reload) and ``stats`` counts the
access log, which records the upstream each request went to.
Weights are percentages; nginx takes weights of 1 or more, so 0 is written as ``down``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.ports import require_free
from bluegreen.orchestrator.private import private_dir
from bluegreen.orchestrator.proxy.base import Backend, ServerStats, check_weights, run_tool, stop_process
from bluegreen.orchestrator.proxy.base import output_tail as _tail

CONFIG = """\
# Written by bluegreen. Edit bluegreen.toml, not this file.
worker_processes 1;
pid {pid};
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bluegreen '$upstream_addr|$upstream_status|$upstream_response_time';
    access_log {dir}/access.log bluegreen;
    # Bodies and answers stay in memory: a worker (nobody, when the master runs as root) never needs
    # to write into the private state directory.
    client_max_body_size 1m;
    client_body_buffer_size 1m;
    proxy_max_temp_file_size 0;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    upstream models {{
{servers}
        keepalive 16;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://models;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""
SERVER = re.compile(r"^\s*server (\S+?)(?: weight=(\d+))?( down)?;\s*# (\w+)$", re.MULTILINE)


class Nginx:
    name = "nginx"

    def __init__(self, directory: Path, host: str, port: int, backends: list[Backend],
                 binary: str = "nginx") -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.backends = backends
        self.binary = binary
        self.config_path = directory / "nginx.conf"
        self.pid_path = directory / "nginx.pid"
        self.access_log = directory / "access.log"

    def render(self, weights: dict[str, int]) -> str:
        lines = []
        for b in self.backends:
            w = weights.get(b.name, 0)
            spec = f"weight={w}" if w > 0 else "down"
            lines.append(f"        server {b.host}:{b.port} {spec}; # {b.name}")
        return CONFIG.format(pid=self.pid_path, dir=self.directory, servers="\n".join(lines),
                             listen=f"{self.host}:{self.port}")

    def _install(self, weights: dict[str, int]) -> None:
        """Write a candidate config, test it, and only then move it into place."""
        check_weights(weights, [b.name for b in self.backends])
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        candidate = self.directory / "nginx.conf.new"
        candidate.write_text(self.render(weights))
        test = self._run([self.binary, "-t", "-q", "-c", str(candidate), "-p", str(self.directory)])
        if test.returncode != 0:
            candidate.unlink()
            raise ProxyError(f"nginx rejected the new configuration; the running one is unchanged: {_tail(test)}")
        os.replace(candidate, self.config_path)

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_path.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"nginx" in cmdline and str(self.config_path).encode() in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, weights: dict[str, int]) -> None:
        require_free(self.host, self.port, "proxy.port")
        private_dir(self.directory)
        self._install(weights)
        started = self._run([self.binary, "-c", str(self.config_path), "-p", str(self.directory)])
        if started.returncode != 0:
            raise ProxyError(f"nginx did not start: {_tail(started)}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self.running():
            time.sleep(0.05)
        if not self.running():
            raise ProxyError("nginx started but its master process is not running")

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        stop_process(pid, signal.SIGQUIT, timeout, "nginx")  # SIGQUIT: graceful shutdown

    def set_weights(self, weights: dict[str, int]) -> None:
        pid = self.pid()
        if pid is None:
            raise ProxyError("nginx is not running", "bluegreen up")
        self._install(weights)
        os.kill(pid, signal.SIGHUP)  # graceful reload: new workers take the tested config

    def weights(self) -> dict[str, int]:
        if not self.running():
            raise ProxyError("nginx is not running", "bluegreen up")
        text = self.config_path.read_text()
        out = {}
        for _addr, weight, down, name in SERVER.findall(text):
            out[name] = 0 if down else int(weight or 1)
        return out

    def stats(self) -> dict[str, ServerStats]:
        by_addr = {f"{b.host}:{b.port}": b.name for b in self.backends}
        counts = {b.name: [0, 0, 0, 0, 0.0] for b in self.backends}  # total, 2xx, 5xx, errors, seconds
        try:
            lines = self.access_log.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            fields = line.split("|")
            if len(fields) != 3:
                continue
            # After a retry nginx lists every upstream it tried, comma-separated, in order.
            addrs, statuses, times = ([v.strip() for v in f.split(",")] for f in fields)
            for addr, status, seconds in zip(addrs, statuses, times, strict=False):
                name = by_addr.get(addr)
                if name is None:
                    continue
                c = counts[name]
                if status.isdigit():
                    c[0] += 1
                    c[1] += status.startswith("2")
                    c[2] += status.startswith("5")
                else:
                    c[3] += 1
                with contextlib.suppress(ValueError):
                    c[4] += float(seconds)
        weights = self.weights()
        return {name: ServerStats(status="UP" if weights.get(name, 0) else "MAINT", weight=weights.get(name, 0),
                                  current_sessions=0, total_sessions=int(c[0] + c[3]),
                                  responses_total=int(c[0]), responses_2xx=int(c[1]), responses_5xx=int(c[2]),
                                  errors=int(c[3]), avg_response_ms=int(1000 * c[4] / c[0]) if c[0] else 0)
                for name, c in counts.items()}

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return run_tool(argv, f"the nginx binary {self.binary!r} is not installed",
                        "apt-get install nginx-light, or set proxy.nginx_binary in bluegreen.toml")
