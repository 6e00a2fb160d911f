"""HAProxy driver: weights and the standby changed live through the runtime API on a unix socket.

The config file is rewritten (atomically) with every change too, so a restarted HAProxy keeps
the weights and the standby. Weights are read back from HAProxy itself, never assumed.

Failover without a human: each colour has a second server line, ``<colour>-standby``, a
``backup`` server at the same address that HAProxy uses only when no active server can take a
request. The warm previous colour's standby line is enabled; when the live colour dies,
``observe layer4 … on-error mark-down`` takes it out on the first failed connection (in band,
not a health-check interval later), and L7 retries with redispatch send the requests that hit it
to the standby. Measured here: traffic on the standby within ~0.2 s of a SIGKILL.

HAProxy's own health check decides whether a server takes traffic: a colour started a moment
ago is DOWN to it until a check passes, however healthy it answers bluegreen. ``wait_servers_up``
reads that decision (``show stat``); weights go to a colour only after it (switch.py).

A proxy of several processes (``processes``, instances.py) shares its listener among independent
HAProxy instances, so a dead one costs only the connections it held. Every live change is saved
first and then sent to each of them; weights and the standby are read from all of them (one that
disagrees, left behind by a change cut short, is set from the saved file); counters are summed,
and a colour is up when every process takes it as up.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bluegreen.orchestrator.common.ports import require_free
from bluegreen.orchestrator.common.private import private_dir
from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.proxy.base import STANDBY, Backend, ServerStats, check_weights, write_atomically
from bluegreen.orchestrator.proxy.base import output_tail as _tail
from bluegreen.orchestrator.proxy.instances import Process, Processes
from bluegreen.orchestrator.proxy.instances import poll as _poll
from bluegreen.orchestrator.proxy.supervise import ProcessSupervisor, Supervisor
from bluegreen.orchestrator.proxy.timings import HAPROXY_LOG_FORMAT, Buckets, Histogram, RingReader, haproxy_timings
from bluegreen.orchestrator.proxy.timings import RING as TIMINGS_RING

if TYPE_CHECKING:
    from bluegreen.orchestrator.proxy.fleet import SharedHAProxy

T = TypeVar("T")

BACKEND = "models"

CONFIG = """\
# Written by bluegreen. Weights and the standby change live through the runtime API and are
# saved here, so a restart keeps them. Edit bluegreen.toml, not this file.
global
    stats socket {socket} mode 600 level admin
    maxconn 4096
    hard-stop-after 30s
{ring}
defaults
    mode http
    timeout connect {connect_ms}ms
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    # A request that found its server dead is sent again, to another server: enough tries to pass
    # every replica of a colour that died at once and still reach the standby.
    retries {retries}
    option redispatch 1
    retry-on {retry_on}{buffer}

frontend models_in
    bind {listen}{log}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET {check_path}
    http-check expect status {check_status}
    default-server inter {inter}ms fastinter {fastinter}ms downinter {fastinter}ms fall 2 rise 1
{servers}
"""
# A deployment of a fleet: its backend alone, in its own file of the shared HAProxy's conf.d (fleet.py).
FRAGMENT = """\
# Written by bluegreen for the deployment {name}. Its weights and standby change live through the
# fleet proxy's runtime API and are saved here, so a restart or a reload keeps them.
backend {backend}
    balance roundrobin
    option httpchk GET {check_path}
    http-check expect status {check_status}
    timeout connect {connect_ms}ms
    retries {retries}
    option redispatch 1
    retry-on {retry_on}{buffer}{strip}
    default-server inter {inter}ms fastinter {fastinter}ms downinter {fastinter}ms fall 2 rise 1
{servers}
"""
# Each request's server and timings, written into a ring in HAProxy's memory: no syscall and no
# disk on the request's path; bluegreen dumps it through the runtime socket (see timings.py).
RING = (f"\nring {TIMINGS_RING}\n"
        "    description \"each request's server and timings, read by bluegreen for a step's p95\"\n"
        "    format raw\n    maxlen 256\n    size {size}\n")
LOG = (f"\n    log ring@{TIMINGS_RING} len 256 format raw local0 info"
       f"\n    log-format \"{HAPROXY_LOG_FORMAT}\"")
RING_BYTES = 1 << 20  # ~25,000 request lines: seconds of the busiest traffic between two reads
SERVER_LINE = re.compile(r"^\s*server (\S+) \S+ (?:weight (\d+) )?.*$", re.MULTILINE)


class HAProxy:
    """A deployment's HAProxy: its own process, its files under ``<state>/haproxy``; or, in a fleet
    (``shared``), its backend in the fleet's one HAProxy, in a file of its own there."""

    name = "haproxy"

    def __init__(self, directory: Path, host: str, port: int, backends: list[Backend],
                 binary: str = "haproxy", check_interval_ms: int = 1000, check_path: str = "/health",
                 check_status: int = 200, supervisor: Supervisor | None = None, connect_timeout_ms: int = 100,
                 failover: bool = True, shield: bool = False, shared: SharedHAProxy | None = None,
                 name: str = "", strip_prefix: str = "", timings: bool = True, processes: int = 1) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.backends = backends
        self.binary = binary
        self.check_interval_ms = check_interval_ms
        self.check_path = check_path
        self.check_status = check_status
        self.connect_timeout_ms = connect_timeout_ms
        self.failover = failover
        self.shield = shield
        self.timings = timings  # each request's line in the ring (off only to measure what it costs)
        self._rings: dict[int, RingReader] = {}  # each process has a ring of its own
        self._latency = {b.name: Histogram() for b in backends}
        self._latency_lock = threading.Lock()  # the place in the ring is read on from where the last read stopped
        self.shared = shared
        self.deployment = name
        self.strip_prefix = strip_prefix  # a fleet route's prefix the model server does not see
        # Counters of a process since restarted or reloaded, and each process's last reading (stats()).
        self._carried: dict[str, ServerStats] = {}
        self._last: dict[int, tuple[tuple[int, int], dict[str, ServerStats]]] = {}
        if shared is not None:
            self.backend = f"be_{name}"
            self.config_path = shared.fragment_path(name)
            self.processes: Processes = shared.processes
        else:
            self.backend = BACKEND
            self.config_path = directory / "haproxy.cfg"
            self.processes = Processes(directory, directory / "haproxy.pid", processes, supervisor or ProcessSupervisor(
                directory / "haproxy.pid", str(self.config_path), "haproxy",
                "apt-get install haproxy, or set proxy.binary in bluegreen.toml"))
        first = self.processes.first
        self.pid_path, self.socket_path, self.supervisor = first.pid_path, first.socket_path, first.supervisor

    # -- config ------------------------------------------------------------------------------
    def render(self, weights: dict[str, int], standby: str | None = None) -> str:
        detect = " observe layer4 error-limit 1 on-error mark-down" if self.failover else ""
        lines = [f"    server {server} {b.host}:{port} weight {weights.get(b.name, 0)} check{detect}"
                 for b in self.backends for server, port in b.servers()]
        if self.failover:
            lines += [f"    server {server}{STANDBY} {b.host}:{port} backup check"
                      + ("" if b.name == standby else " disabled")
                      for b in self.backends for server, port in b.servers()]
        retry_on = "conn-failure empty-response response-timeout" + (" 500 502 503 504" if self.shield else "")
        if self.shared is not None:
            strip = (f"\n    http-request replace-path ^{re.escape(self.strip_prefix)}/?(.*)$ /\\1"
                     if self.strip_prefix else "")
            return FRAGMENT.format(
                name=self.deployment, backend=self.backend, check_path=self.check_path,
                check_status=self.check_status, connect_ms=self.connect_timeout_ms, retry_on=retry_on,
                retries=max(3, max((b.replicas for b in self.backends), default=1) + 2),
                buffer="\n    option http-buffer-request" if self.shield or self.failover else "", strip=strip,
                inter=self.check_interval_ms, fastinter=max(100, self.check_interval_ms // 4),
                servers="\n".join(lines))
        return CONFIG.format(ring=RING.format(size=RING_BYTES) if self.timings else "",
                             log=LOG if self.timings else "", socket=self.processes.stats_socket(),
                             listen=f"{self.host}:{self.port}", backend=BACKEND,
                             inter=self.check_interval_ms, fastinter=max(100, self.check_interval_ms // 4),
                             check_path=self.check_path, check_status=self.check_status,
                             connect_ms=self.connect_timeout_ms, retry_on=retry_on, servers="\n".join(lines),
                             retries=max(3, max((b.replicas for b in self.backends), default=1) + 2),
                             # A request is replayed (on a dead server's standby, or after a candidate's 5xx)
                             # only if HAProxy holds all of it: wait for the body before choosing a server.
                             buffer="\n    option http-buffer-request" if self.shield or self.failover else "")

    def _write_config(self, weights: dict[str, int], standby: str | None) -> None:
        private_dir(self.config_path.parent)
        write_atomically(self.config_path, self.render(weights, standby))

    def _saved(self) -> tuple[dict[str, int], str | None]:
        """The weights and standby in the config file (what a restart would come back with)."""
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            return {}, None
        colours = {b.name for b in self.backends}
        weights = {name: int(w) for name, w in SERVER_LINE.findall(text) if w and name in colours}
        standby = next((self._colour_of(line.split()[1][: -len(STANDBY)]) for line in text.splitlines()
                        if line.strip().startswith("server ") and line.split()[1].endswith(STANDBY)
                        and not line.rstrip().endswith(" disabled")), None)
        return weights, standby

    def _servers_of(self, colour: str) -> list[str]:
        return [server for b in self.backends if b.name == colour for server, _port in b.servers()]

    def _colour_of(self, server: str) -> str:
        return next((b.name for b in self.backends for name, _port in b.servers() if name == server), server)

    # -- process -----------------------------------------------------------------------------
    def running(self) -> bool:
        """Whether the proxy runs (any of its processes); in a fleet, whether the fleet's HAProxy runs with
        this backend loaded."""
        if self.shared is not None:
            return self.shared.running() and self.shared.has_backend(self.backend)
        return self.processes.any_running()

    def stopped_processes(self) -> list[str]:
        """The proxy's processes that are not running while another one is (``up`` starts them)."""
        stopped = self.processes.stopped()
        if len(stopped) == self.processes.count:
            return []
        return [f"haproxy process {p.number} of {self.processes.count}" for p in stopped]

    def _argv(self, process: Process) -> list[str]:
        # Master-worker: SIGUSR2 to the master reloads a changed config with no connection refused.
        if process.supervisor.kind == "container":
            return [self.binary, "-W", "-db", "-f", str(self.config_path)]  # in the foreground: the container's process
        return [self.binary, "-W", "-D", "-f", str(self.config_path), "-p", str(process.pid_path)]

    def start(self, weights: dict[str, int], standby: str | None = None) -> None:
        """Write the config, check it, and start HAProxy under its supervisor; wait for its socket.

        In a fleet: write this deployment's backend, and start the shared HAProxy with it, or reload
        the running one seamlessly when the backend is new or changed.
        """
        check_weights(weights, [b.name for b in self.backends])
        if self.shared is not None:
            with self.shared.lock():
                self._write_config(weights, standby)
                self.shared.apply()
            return
        require_free(self.host, self.port, "proxy.port")
        self._write_config(weights, standby)
        private_dir(self.socket_path.parent)
        self._check()
        try:
            self.processes.start(self.processes.all, self._argv)
        except BaseException:
            self.processes.stop(2.0)
            raise

    def _check(self, what: str = "") -> None:
        check = self.supervisor.check([self.binary, "-c", "-f", str(self.config_path)])
        if check.returncode != 0:
            raise ProxyError(f"haproxy rejected {what}{self.config_path}: {_tail(check)}")

    def _answers(self) -> bool:
        return bool(self.processes.answering())

    def wait_ready(self, timeout: float) -> bool:
        """Whether HAProxy answers on its socket within ``timeout`` (after a supervised restart)."""
        return _poll(self._answers, timeout)

    def reconfigure(self) -> bool:
        """Apply changed settings (ports, checks, failover, timeouts) with a seamless reload of each
        process in turn, start any process of the proxy that is not running (from the saved file), and
        stop those beyond ``processes``; False: nothing to do."""
        weights, standby = self.weights(), self.standby()
        wanted = self.render(weights, standby)
        changed = not self.config_path.exists() or self.config_path.read_text() != wanted
        if self.shared is not None:
            if not changed:
                with self.shared.lock():
                    return self.shared.apply()
            with self.shared.lock():
                self._write_config(weights, standby)
                self.shared.apply()
            return True
        if changed:
            self._write_config(weights, standby)
            self._check("the new configuration ")
            for process in self.processes.running():
                process.reload()
        stopped, surplus = self.processes.stopped(), self.processes.surplus()
        self.processes.start(stopped, self._argv)
        for process in surplus:
            process.supervisor.stop(signal.SIGUSR1, 10.0)
        return changed or bool(stopped) or bool(surplus)

    def stop(self, timeout: float = 10.0) -> None:
        """Soft-stop (finish open requests), then terminate if it lingers.

        In a fleet the shared HAProxy keeps serving the other deployments: this one's servers get no
        traffic (weights 0, no standby), and its backend stays, so its route answers 503, not 404.
        """
        if self.shared is not None:
            if self.running():
                self.set_weights({b.name: 0 for b in self.backends})
                self.set_standby(None)
            return
        self.processes.stop(timeout)

    # -- runtime API -------------------------------------------------------------------------
    def command(self, line: str) -> str:
        """One command to the proxy's runtime API; its first process that answers answers it."""
        return self.processes.command(line)

    def set_weights(self, weights: dict[str, int]) -> None:
        """Save weights in the config file, then apply them live in every process."""
        check_weights(weights, [b.name for b in self.backends])
        lines = [(f"set weight {self.backend}/{server} {weight}", f"weight {weight} for {server}")
                 for name, weight in weights.items() for server in self._servers_of(name)]
        with self._saving():
            saved_weights, standby = self._saved()
            self._write_config({**saved_weights, **weights}, standby)
            self._send(lines)

    def _send(self, lines: list[tuple[str, str]]) -> None:
        for (_line, what), answer in zip(lines, self.processes.send([line for line, _what in lines]), strict=True):
            if answer:
                raise ProxyError(f"haproxy refused {what}: {answer}")

    def _saving(self) -> contextlib.AbstractContextManager[object]:
        """In a fleet, a change and its saving happen between reloads, never across one (which would
        start the new HAProxy from the file before the change reached it). The file is written first:
        a process that starts meanwhile (its supervisor restarting it) reads the change there."""
        return self.shared.lock() if self.shared is not None else contextlib.nullcontext()

    def set_standby(self, color: str | None) -> None:
        """Make ``color`` the failover target (None: no standby), in the config file and live."""
        if not self.failover:
            return
        names = [b.name for b in self.backends]
        if color is not None:
            check_weights({color: 0}, names)
        lines = [(f"set server {self.backend}/{server}{STANDBY} state {state}", f"to set {server}{STANDBY} {state}")
                 for name in names for state in ["ready" if name == color else "maint"]
                 for server in self._servers_of(name)]
        with self._saving():
            weights, _ = self._saved()
            self._write_config(weights or self.weights(), color)
            self._send(lines)

    def standby(self) -> str | None:
        """The colour HAProxy fails over to now, read from HAProxy itself (every process)."""
        if not self.failover:
            return None
        return self._agreed(self._standby_of)

    def _standby_of(self, process: Process) -> str | None:
        for row in self._rows(process):
            name = row.get("svname", "")
            if name.endswith(STANDBY) and row.get("status") != "MAINT":
                return self._colour_of(name[: -len(STANDBY)])
        return None

    def weights(self) -> dict[str, int]:
        """The weights HAProxy applies now, read from every process."""
        return self._agreed(self._weights_of)

    def _weights_of(self, process: Process) -> dict[str, int]:
        out = {}
        for backend in self.backends:
            answer = process.command(f"get weight {self.backend}/{backend.name}").strip()
            try:
                out[backend.name] = int(answer.split()[0])
            except (ValueError, IndexError):
                raise ProxyError(f"unexpected answer from haproxy for {backend.name}'s weight: {answer!r}") from None
        return out

    def _agreed(self, read: Callable[[Process], T]) -> T:
        """What every process that answers says; one that disagrees (a change cut short between two
        processes) is set from the saved file, which each change is written to first."""
        processes = self.processes.answering() or [self.processes.first]  # none: the first's error
        values = [read(p) for p in processes]
        if all(v == values[0] for v in values):
            return values[0]
        # No lock: what is sent is what the file already says, so a reload meanwhile reads the same.
        weights, standby = self._saved()
        self._send([(f"set weight {self.backend}/{server} {w}", f"weight {w} for {server}")
                    for name, w in weights.items() for server in self._servers_of(name)])
        if self.failover:
            self._send([(f"set server {self.backend}/{server}{STANDBY} state "
                         f"{'ready' if b.name == standby else 'maint'}", f"to set {server}{STANDBY}")
                        for b in self.backends for server, _port in b.servers()])
        values = [read(p) for p in processes]
        if any(v != values[0] for v in values):
            said = ", ".join(f"process {p.number}: {v}" for p, v in zip(processes, values, strict=True))
            raise ProxyError(f"the proxy's processes disagree even after being set from {self.config_path}: {said}",
                             "restart the process that differs (docker restart <its container>, or kill it and "
                             "bluegreen up): it starts from the saved configuration   (runbooks/failover.md)")
        return values[0]

    def _rows(self, process: Process | None = None) -> list[dict[str, str]]:
        """``show stat`` of one process (the first that answers): one row per server line of the colours' backend."""
        text = process.command("show stat") if process is not None else self.command("show stat")
        lines = [line for line in text.splitlines() if line]
        if not lines or not lines[0].startswith("# "):
            raise ProxyError(f"unexpected answer to 'show stat': {text[:200]!r}")
        header = lines[0][2:].split(",")
        rows = (dict(zip(header, line.split(","), strict=False)) for line in lines[1:])
        return [row for row in rows if row.get("pxname") == self.backend]

    def _stats_of(self, process: Process) -> dict[str, ServerStats]:
        # A colour's replicas are counted together, under the colour's name (and <colour>-standby).
        key = {server + suffix: b.name + suffix for b in self.backends for server, _port in b.servers()
               for suffix in ("", STANDBY)}
        grouped: dict[str, list[ServerStats]] = {}
        for row in self._rows(process):
            if row.get("svname") in key:
                grouped.setdefault(key[row["svname"]], []).append(ServerStats.from_haproxy(row))
        return {name: ServerStats.combined(servers) for name, servers in grouped.items()}

    def stats(self) -> dict[str, ServerStats]:
        """Per-server counters: the colours, and their standby lines as ``<colour>-standby``.

        With several processes, each one's counters are summed. They never go back while this object
        reads them: a process that restarted counts from zero again, so what it had counted before
        is carried, and one that does not answer now (dead, starting) counts what it last did.
        """
        now: list[dict[str, ServerStats]] = []
        absent: list[dict[str, ServerStats]] = []
        for process in self.processes:
            try:
                identity = process.identity()
                current = self._stats_of(process)
            except ProxyError:
                if self.processes.count == 1:
                    raise
                if process.number in self._last:
                    absent.append(self._last[process.number][1])
                continue
            last = self._last.get(process.number)
            if last is not None and _restarted(last[0], identity, last[1], current):
                for name, counted in last[1].items():
                    earlier = self._carried.get(name)
                    self._carried[name] = counted if earlier is None else ServerStats.summed([counted], [earlier])
            self._last[process.number] = (identity, current)
            now.append(current)
        if not now:
            raise ProxyError(f"none of the proxy's {self.processes.count} processes answers on its runtime socket",
                             "bluegreen status; bluegreen up")
        return {name: ServerStats.summed([s[name] for s in now if name in s],
                                         [s[name] for s in [*absent, self._carried] if name in s])
                for name in now[0]}

    def wait_servers_up(self, color: str, timeout: float) -> bool:
        """Whether HAProxy's own health checks take every server of ``color`` as up within ``timeout``.

        A colour started a moment ago answers bluegreen's probes before HAProxy checks it again:
        until then HAProxy holds it DOWN (its last check failed while it was stopped), so weights
        moved to it now leave no server to answer. HAProxy re-checks a DOWN server every
        ``downinter`` (a quarter of proxy.check_interval_ms), and one passing check (``rise 1``)
        brings it up. Every process of the proxy checks on its own: each must take it as up (one
        that is not running is not asked).
        """
        servers = set(self._servers_of(color))
        if not servers:
            raise ProxyError(f"no backend named {color}; the backends are {', '.join(b.name for b in self.backends)}")

        def up_in(process: Process) -> bool:
            try:
                rows = self._rows(process)
            except ProxyError:
                return not process.running()  # a process starting: not yet; one stopped: not asked
            status = {row["svname"]: row.get("status", "") for row in rows if row.get("svname") in servers}
            # "UP 1/2" is a server whose last check failed, on its way down; "no check": checks are off.
            return len(status) == len(servers) and all(s in ("UP", "no check") for s in status.values())

        def all_up() -> bool:
            return all(up_in(p) for p in self.processes) and bool(self.processes.answering())

        return _poll(all_up, timeout)

    def latency(self) -> dict[str, Buckets]:
        """Each colour's latency histogram from HAProxy's request lines, its replicas summed.

        Counted from this object's first call; read it again and compare (a quantile of the
        difference). Requests HAProxy answered while it was being reloaded, or more than its ring
        holds between two calls, are not counted: the histogram's total says how many were.
        """
        # In a fleet the one ring holds every deployment's requests: lines name the backend too.
        prefix = f"{self.backend}/" if self.shared is not None else ""
        servers = {prefix + server: b.name for b in self.backends for server, _port in b.servers()}
        with self._latency_lock:
            # Each process times the requests it forwarded, in its own ring: every ring is read on from
            # where its last read stopped (a restarted process's new ring from its start).
            for process in self.processes.answering():
                reader = self._rings.setdefault(process.number, RingReader())
                try:
                    lines = reader.new_lines(process.command(f"show events {TIMINGS_RING}"))
                except ProxyError:
                    continue  # it died between the two: its requests are counted when it is back
                for (server, seconds), n in haproxy_timings(lines).items():
                    if server in servers:
                        self._latency.setdefault(servers[server], Histogram()).observe(seconds, n)
            return {name: h.cumulative() for name, h in self._latency.items()}


def _restarted(was: tuple[int, int], now: tuple[int, int], counted: dict[str, ServerStats],
               counting: dict[str, ServerStats]) -> bool:
    """Whether a process (its worker's pid and uptime, its counters) restarted or reloaded since it was
    last read: another worker, less uptime, or counters that went back."""
    return (now[0] != was[0] or now[1] < was[1]
            or any(name in counting and counting[name].total_sessions < s.total_sessions
                   for name, s in counted.items()))
