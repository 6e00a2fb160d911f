"""The fleet's one HAProxy: one listener for every deployment of the host, a route to each.

Its configuration is a directory (``conf.d``), which HAProxy reads in name order: ``00-fleet.cfg``
holds the listener and the routes, written from the fleet file; each deployment writes its own
backend to ``50-<name>.cfg`` (haproxy.py in shared mode) and changes its weights and standby live
through the one runtime socket, saving them in its file. No deployment ever rewrites another's
file. Adding, removing or re-routing a deployment is a seamless reload of the master (SIGUSR2):
the listening socket stays open and the old worker finishes its requests, so the other
deployments lose nothing. A lock on the directory keeps a reload from starting between a
deployment's live change and its saving, which would lose the change.

The fleet's HAProxy is every deployment's single point of failure, so by default it runs as two
processes sharing the listener (``[proxy] processes``, instances.py): when one dies, only the
connections it held fail, and the other serves every deployment while the dead one is restarted.

A request goes to the most specific route that matches: host and prefix, then host alone, then
the longest prefix alone. ``Host`` is compared without its port and case; a prefix matches the
path itself or the path below it (``/fraud`` and ``/fraud/…``, never ``/fraudulent``). A request
no route matches gets 404 naming the host and path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bluegreen.orchestrator.common.ports import require_free
from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.proxy.base import output_tail, write_atomically
from bluegreen.orchestrator.proxy.haproxy import RING, RING_BYTES
from bluegreen.orchestrator.proxy.instances import Process, Processes
from bluegreen.orchestrator.proxy.supervise import ProcessSupervisor, Supervisor
from bluegreen.orchestrator.proxy.timings import FLEET_LOG_FORMAT
from bluegreen.orchestrator.proxy.timings import RING as TIMINGS_RING

# Every deployment's requests go to one ring: each line names the backend with the server.
FLEET_LOG = (f"\n    log ring@{TIMINGS_RING} len 256 format raw local0 info"
             f"\n    log-format \"{FLEET_LOG_FORMAT}\"")

# What a deployment changes live, through the runtime API, and saves in its file: not a reason to reload.
LIVE = re.compile(r" weight \d+| disabled(?=\n)")

FRONTEND = """\
# Written by bluegreen from the fleet file {fleet}: the one listener and the route to each deployment.
# Each deployment's backend is in its own file beside this one. Edit the fleet file, not these.
global
    stats socket {socket} mode 600 level admin
    maxconn 8000
    hard-stop-after 30s
{ring}
defaults
    mode http
    timeout connect 100ms
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s

frontend fleet_in
    bind {listen}{log}
{routes}
    default_backend fleet_unrouted

backend fleet_unrouted
    http-request return status 404 content-type text/plain lf-string {unrouted}
"""
UNROUTED = '"no deployment of this fleet serves host %[req.hdr(host)] path %[path]\\n"'


@dataclass(frozen=True)
class Route:
    """How the listener reaches one deployment: any of ``hosts`` and/or under ``prefix``."""

    name: str
    hosts: tuple[str, ...] = ()
    prefix: str = ""

    @property
    def backend(self) -> str:
        return f"be_{self.name}"

    def rank(self) -> tuple[int, int, str]:
        """Most specific first: host and prefix, then host, then prefix (the longest first)."""
        kind = 0 if self.hosts and self.prefix else 1 if self.hosts else 2
        return kind, -len(self.prefix), self.name

    def lines(self) -> list[str]:
        acl, conditions = [], []
        if self.hosts:
            acl.append(f"    acl {self.name}_host hdr(host),field(1,:) -i {' '.join(self.hosts)}")
            conditions.append(f"{self.name}_host")
        if self.prefix:
            acl.append(f"    acl {self.name}_path path {self.prefix}")
            acl.append(f"    acl {self.name}_path path_beg {self.prefix}/")
            conditions.append(f"{self.name}_path")
        return [f"    # {self.name}", *acl, f"    use_backend {self.backend} if {' '.join(conditions)}"]


class SharedHAProxy:
    """The fleet's HAProxy process: its directory, listener, routes, supervisor and reloads."""

    def __init__(self, directory: Path, host: str, port: int, routes: list[Route], binary: str = "haproxy",
                 supervisor: Supervisor | None = None, fleet_file: str = "", processes: int = 1) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.routes = routes
        self.binary = binary
        self.fleet_file = fleet_file
        self.conf_dir = directory / "conf.d"
        self.frontend_path = self.conf_dir / "00-fleet.cfg"
        self.processes = Processes(directory, directory / "haproxy.pid", processes, supervisor or ProcessSupervisor(
            directory / "haproxy.pid", str(self.conf_dir), "haproxy", "apt-get install haproxy, or set proxy.binary "
                                                                      "in the fleet file"))
        first = self.processes.first
        self.pid_path, self.socket_path, self.supervisor = first.pid_path, first.socket_path, first.supervisor

    def fragment_path(self, name: str) -> Path:
        return self.conf_dir / f"50-{name}.cfg"

    def backends_written(self) -> set[str]:
        """The deployments whose backend file is there."""
        if not self.conf_dir.is_dir():
            return set()
        return {p.name[3:-4] for p in self.conf_dir.glob("50-*.cfg")}

    # -- the configuration --------------------------------------------------------------------
    def render(self) -> str:
        """The listener, and a route to each deployment whose backend is written (a route to a backend
        that is not there yet would fail the whole configuration)."""
        written = self.backends_written()
        routes = sorted((r for r in self.routes if r.name in written), key=Route.rank)
        lines = [line for r in routes for line in r.lines()]
        return FRONTEND.format(fleet=self.fleet_file, socket=self.processes.stats_socket(),
                               listen=f"{self.host}:{self.port}", ring=RING.format(size=RING_BYTES * 4),
                               log=FLEET_LOG, routes="\n".join(lines) if lines else "    # no deployment yet",
                               unrouted=UNROUTED)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Held while the configuration is written and applied, or a live change saved."""
        private_dir(self.directory)
        with open(self.directory / "config.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def apply(self) -> bool:
        """Write the listener's file, check the whole directory, then start HAProxy or reload it
        seamlessly (each process in turn) when the configuration changed; start any of its processes
        that is not running. Call it holding ``lock()``. True: something changed."""
        private_dir(self.conf_dir)
        wanted = self.render()
        changed = not self.frontend_path.exists() or self.frontend_path.read_text() != wanted
        write_atomically(self.frontend_path, wanted)
        running = self.processes.running()
        stale = changed or self._stale()
        stopped, surplus = self.processes.stopped(), self.processes.surplus()
        if running and not stale and not stopped and not surplus:
            return False
        if stale or not running:
            check = self.supervisor.check([self.binary, "-c", "-f", str(self.conf_dir)])
            if check.returncode != 0:
                raise ProxyError(f"haproxy rejected the fleet configuration {self.conf_dir}: {output_tail(check)}",
                                 "bluegreen fleet status; the named file and line   (runbooks/fleet.md)")
        if not running:
            self._start()
        else:
            if stale:
                for process in running:  # one at a time: the others keep serving meanwhile
                    process.reload()
            self.processes.start(stopped, self._argv)
            for process in surplus:
                process.supervisor.stop(signal.SIGUSR1, 10.0)
        self._loaded = self._fingerprint()
        return True

    def _fingerprint(self) -> str:
        """The configuration as HAProxy loads it, less what changes live (weights, standby)."""
        parts = []
        for path in sorted(self.conf_dir.glob("*.cfg")):
            text = LIVE.sub("", path.read_text())
            parts.append(f"{path.name}:{hashlib.sha256(text.encode()).hexdigest()[:16]}")
        return "\n".join(parts)

    def _stale(self) -> bool:
        """Whether the files say more than a live change since HAProxy last read them (a new backend,
        a changed check, another route)."""
        return self._fingerprint() != self._read_loaded()

    def _read_loaded(self) -> str:
        try:
            return (self.directory / "loaded").read_text()
        except OSError:
            return ""

    def loaded_backends(self) -> set[str]:
        """The backends the running HAProxy has (empty when it does not answer)."""
        try:
            text = self.command("show backend")
        except ProxyError:
            return set()
        return {line.strip() for line in text.splitlines()[1:] if line.strip()}

    def has_backend(self, backend: str) -> bool:
        return backend in self.loaded_backends()

    def _argv(self, process: Process) -> list[str]:
        if process.supervisor.kind == "container":
            return [self.binary, "-W", "-db", "-f", str(self.conf_dir)]
        return [self.binary, "-W", "-D", "-f", str(self.conf_dir), "-p", str(process.pid_path)]

    def _start(self) -> None:
        require_free(self.host, self.port, "the fleet's proxy.port")
        private_dir(self.socket_path.parent)
        try:
            self.processes.start(self.processes.all, self._argv)
        except BaseException:
            self.processes.stop(2.0)
            raise

    @property
    def _loaded(self) -> str:
        return self._read_loaded()

    @_loaded.setter
    def _loaded(self, value: str) -> None:
        write_atomically(self.directory / "loaded", value)

    # -- the processes -------------------------------------------------------------------------
    def running(self) -> bool:
        """Whether the fleet's HAProxy runs (any of its processes)."""
        return self.processes.any_running()

    def answers(self) -> bool:
        return bool(self.processes.answering())

    def command(self, line: str) -> str:
        """One command to the runtime API; the first process that answers answers it."""
        return self.processes.command(line)

    def remove(self, name: str) -> bool:
        """Take a deployment's backend and route out (a seamless reload); False: it was not there."""
        with self.lock():
            path = self.fragment_path(name)
            if not path.exists():
                return False
            path.unlink()
            self.routes = [r for r in self.routes if r.name != name]
            if self.running():
                self.apply()
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """Soft-stop the fleet's HAProxy, every process (every deployment's traffic stops)."""
        self.processes.stop(timeout)
