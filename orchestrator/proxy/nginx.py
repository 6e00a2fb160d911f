"""nginx driver: weights rendered into an upstream block, checked with ``nginx -t``, then reloaded.

A config that fails ``nginx -t`` is never put in place. Open-source nginx has no API to read
weights or per-server counters, so ``weights`` reads the config the running master loaded (the
file is only ever replaced by a tested config followed by a reload) and ``stats`` counts the
access log, which records the upstream each request went to (read incrementally), and ``latency``
buckets the time each took (``$upstream_response_time``).
Weights are percentages; nginx takes weights of 1 or more, so 0 is written as ``down``, and the
warm previous colour as a ``backup`` server: with ``max_fails=1`` on the live server and
``proxy_next_upstream`` (POST included: ``non_idempotent``), a request that finds the live colour
dead is passed to the standby, and the live colour is left alone for ``fail_timeout``.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

from bluegreen.orchestrator.common.ports import require_free
from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.proxy.base import Backend, ServerStats, check_weights
from bluegreen.orchestrator.proxy.base import output_tail as _tail
from bluegreen.orchestrator.proxy.supervise import ProcessSupervisor, Supervisor
from bluegreen.orchestrator.proxy.timings import Buckets, Histogram, nginx_timing

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
            proxy_connect_timeout {connect_ms}ms;
            proxy_next_upstream {next_upstream};
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""
SERVER = re.compile(r"^\s*server (\S+?)(?: weight=(\d+))?(?: max_fails=\d+ fail_timeout=\S+)?( down| backup)?;"
                    r"\s*# (\w+)$", re.MULTILINE)


class Nginx:
    name = "nginx"

    def __init__(self, directory: Path, host: str, port: int, backends: list[Backend],
                 binary: str = "nginx", supervisor: Supervisor | None = None, connect_timeout_ms: int = 100,
                 failover: bool = True, shield: bool = False) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.backends = backends
        self.binary = binary
        self.connect_timeout_ms = connect_timeout_ms
        self.failover = failover
        self.shield = shield
        self.config_path = directory / "nginx.conf"
        self.pid_path = directory / "nginx.pid"
        self.access_log = directory / "access.log"
        self.supervisor: Supervisor = supervisor or ProcessSupervisor(
            self.pid_path, str(self.config_path), "nginx",
            "apt-get install nginx-light, or set proxy.nginx_binary in bluegreen.toml")
        self._log_offset = 0
        self._stats_lock = threading.Lock()
        self._counts: dict[str, list[float]] = {b.name: [0, 0, 0, 0, 0.0] for b in backends}
        self._latency = {b.name: Histogram() for b in backends}

    def render(self, weights: dict[str, int], standby: str | None = None) -> str:
        lines = []
        for b in self.backends:
            w = weights.get(b.name, 0)
            if w > 0:
                spec = f"weight={w}" + (" max_fails=1 fail_timeout=5s" if self.failover else "")
            elif self.failover and b.name == standby:
                spec = "backup"
            else:
                spec = "down"
            lines.append(f"        server {b.host}:{b.port} {spec}; # {b.name}")
        next_upstream = "error timeout http_502 http_503" + (" http_500 http_504" if self.shield else "")
        if self.failover:
            next_upstream += " non_idempotent"
        return CONFIG.format(pid=self.pid_path, dir=self.directory, servers="\n".join(lines),
                             listen=f"{self.host}:{self.port}", connect_ms=self.connect_timeout_ms,
                             next_upstream=next_upstream)

    def _install(self, weights: dict[str, int], standby: str | None) -> None:
        """Write a candidate config, test it, and only then move it into place."""
        check_weights(weights, [b.name for b in self.backends])
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.directory / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        candidate = self.directory / "nginx.conf.new"
        candidate.write_text(self.render(weights, standby))
        test = self.supervisor.check([self.binary, "-t", "-q", "-c", str(candidate), "-p", str(self.directory)])
        if test.returncode != 0:
            candidate.unlink()
            raise ProxyError(f"nginx rejected the new configuration; the running one is unchanged: {_tail(test)}")
        os.replace(candidate, self.config_path)

    def running(self) -> bool:
        return self.supervisor.running()

    def start(self, weights: dict[str, int], standby: str | None = None) -> None:
        require_free(self.host, self.port, "proxy.port")
        private_dir(self.directory)
        self._install(weights, standby)
        argv = [self.binary, "-c", str(self.config_path), "-p", str(self.directory)]
        if self.supervisor.kind == "container":
            argv += ["-g", "daemon off;"]
        self.supervisor.start(argv)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._listening():
            time.sleep(0.05)
        if not self._listening():
            raise ProxyError("nginx started but does not accept connections on "
                             f"{self.host}:{self.port}: {_tail_log(self.directory / 'error.log')}")

    def _listening(self) -> bool:
        import socket

        if not self.running():
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._listening():
                return True
            time.sleep(0.05)
        return self._listening()

    def stop(self, timeout: float = 10.0) -> None:
        self.supervisor.stop(signal.SIGQUIT, timeout)  # SIGQUIT: graceful shutdown

    def _reload(self, weights: dict[str, int], standby: str | None) -> None:
        if not self.running():
            raise ProxyError("nginx is not running", "bluegreen up")
        self._install(weights, standby)
        self.supervisor.send_signal(signal.SIGHUP)  # graceful reload: new workers take the tested config

    def reconfigure(self) -> bool:
        """Apply changed settings with a tested config and a graceful reload; False when nothing changed."""
        weights, standby = self.weights(), self.standby()
        if self.config_path.read_text() == self.render(weights, standby):
            return False
        self._reload(weights, standby)
        return True

    def stopped_processes(self) -> list[str]:
        """None: nginx's own master starts a new worker when one dies."""
        return []

    def set_weights(self, weights: dict[str, int]) -> None:
        self._reload({**self.weights(), **weights}, self.standby())

    def wait_servers_up(self, color: str, timeout: float) -> bool:
        """Whether every server of ``color`` accepts a connection from here within ``timeout``.

        Open-source nginx has no health checks of its own: a server is in rotation from the reload
        that gives it weight, and each reload starts with no failure counted against it
        (``max_fails``). Up, to nginx, is a server that takes the connection it will open.
        """
        import socket

        addresses = [(b.host, port) for b in self.backends if b.name == color for _server, port in b.servers()]
        if not addresses:
            raise ProxyError(f"no backend named {color}; the backends are {', '.join(b.name for b in self.backends)}")

        def accepts(address: tuple[str, int]) -> bool:
            try:
                with socket.create_connection(address, timeout=max(0.1, self.connect_timeout_ms / 1000)):
                    return True
            except OSError:
                return False

        deadline = time.monotonic() + timeout
        while not all(accepts(a) for a in addresses):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def set_standby(self, color: str | None) -> None:
        if not self.failover or color == self.standby():
            return
        self._reload(self.weights(), color)

    def _servers(self) -> list[tuple[str, int, str]]:
        """(colour, weight, flag) from the loaded config; flag is "", "down" or "backup"."""
        text = self.config_path.read_text()
        return [(name, 0 if flag else int(weight or 1), flag.strip()) for _addr, weight, flag, name
                in SERVER.findall(text)]

    def weights(self) -> dict[str, int]:
        if not self.running():
            raise ProxyError("nginx is not running", "bluegreen up")
        return {name: weight for name, weight, _flag in self._servers()}

    def standby(self) -> str | None:
        return next((name for name, _w, flag in self._servers() if flag == "backup"), None)

    def stats(self) -> dict[str, ServerStats]:
        with self._stats_lock:  # the counts are read on from where the last call stopped
            self._read_log()
            counts = {name: list(c) for name, c in self._counts.items()}
        weights = self.weights()
        return {name: ServerStats(status="UP" if weights.get(name, 0) else "MAINT", weight=weights.get(name, 0),
                                  current_sessions=0, total_sessions=int(c[0] + c[3]),
                                  responses_total=int(c[0]), responses_2xx=int(c[1]), responses_5xx=int(c[2]),
                                  errors=int(c[3]), avg_response_ms=int(1000 * c[4] / c[0]) if c[0] else 0)
                for name, c in counts.items()}

    def latency(self) -> dict[str, Buckets]:
        """Each colour's latency histogram from ``$upstream_response_time`` in the access log.

        Counted from this object's first read of the log, and never reset (a rotated log is read on
        from its start); compare two readings.
        """
        with self._stats_lock:
            self._read_log()
            return {name: h.cumulative() for name, h in self._latency.items()}

    def _read_log(self) -> None:
        """Count the access log's lines written since the last read."""
        by_addr = {f"{b.host}:{b.port}": b.name for b in self.backends}
        try:
            with open(self.access_log) as fh:
                if os.fstat(fh.fileno()).st_size < self._log_offset:  # a new log: count from its start
                    self._log_offset = 0
                    self._counts = {b.name: [0, 0, 0, 0, 0.0] for b in self.backends}
                fh.seek(self._log_offset)
                text = fh.read()
        except FileNotFoundError:
            text = ""
        complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
        self._log_offset += len(complete.encode())
        for line in complete.splitlines():
            fields = line.split("|")
            if len(fields) != 3:
                continue
            # After a retry nginx lists every upstream it tried, comma-separated, in order.
            addrs, statuses, times = ([v.strip() for v in f.split(",")] for f in fields)
            for addr, status, seconds in zip(addrs, statuses, times, strict=False):
                name = by_addr.get(addr)
                if name is None:
                    continue
                c = self._counts[name]
                if status.isdigit():
                    c[0] += 1
                    c[1] += status.startswith("2")
                    c[2] += status.startswith("5")
                else:
                    c[3] += 1
                timed = nginx_timing(seconds)
                if timed is not None:
                    c[4] += timed
                    if status.isdigit():  # an attempt that got no status is an error, counted above
                        self._latency.setdefault(name, Histogram()).observe(timed)


def _tail_log(path: Path) -> str:
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return "no error log"
    return lines[-1] if lines else "no error log lines"
