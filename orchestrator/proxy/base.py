"""The proxy interface every driver implements, and the values it speaks in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.proxy.timings import Buckets

MAX_WEIGHT = 100  # weights are percentages of traffic
STANDBY = "-standby"  # the suffix of a colour's backup server line, where a driver counts it apart


@dataclass(frozen=True)
class Backend:
    name: str  # the colour
    host: str
    port: int
    replicas: int = 1  # a swarm colour: one server per replica, replica i on port + (i - 1) * port_step
    port_step: int = 0

    def servers(self) -> list[tuple[str, int]]:
        """(server name, port) per replica: the first is named after the colour, the others <colour>-<i>."""
        return [(self.name if i == 0 else f"{self.name}-{i + 1}", self.port + i * self.port_step)
                for i in range(self.replicas)]


@dataclass(frozen=True)
class ServerStats:
    """One colour as the proxy sees it: its health check and its request counters."""

    status: str  # UP, DOWN, MAINT, no check, …
    weight: int
    current_sessions: int
    total_sessions: int
    responses_total: int  # answers of any status relayed from this server
    responses_2xx: int
    responses_5xx: int
    errors: int  # connection and response errors
    avg_response_ms: int
    # Attempts that failed on this server and were sent again (to another server, with redispatch):
    # the user saw no error, but the server failed them (a shielded canary's 5xx are counted here).
    retries: int = 0
    down_transitions: int = 0  # times the proxy took the server out (UP -> DOWN), health check or in band
    # A colour of several servers: each replica's own counters (empty for a one-server colour).
    replicas: tuple[ServerStats, ...] = field(default=(), repr=False)

    @property
    def failed_attempts(self) -> int:
        """Attempts that got no answer from this server: connection and response errors, and retries."""
        return self.errors + self.retries

    @classmethod
    def from_haproxy(cls, row: dict[str, str]) -> ServerStats:
        def num(key: str) -> int:
            try:
                return int(row.get(key) or 0)
            except ValueError:
                return 0

        answered = sum(num(k) for k in ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"))
        return cls(status=row.get("status", ""), weight=num("weight"), current_sessions=num("scur"),
                   total_sessions=num("stot"), responses_total=answered, responses_2xx=num("hrsp_2xx"),
                   responses_5xx=num("hrsp_5xx"),
                   errors=num("econ") + num("eresp"), avg_response_ms=num("rtime"),
                   retries=num("wretr"), down_transitions=num("chkdown"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("replicas")
        return out

    @classmethod
    def combined(cls, servers: list[ServerStats]) -> ServerStats:
        """A colour of several servers (replicas) as one: counters summed, UP while any server is."""
        first = servers[0]
        if len(servers) == 1:
            return first
        return cls(status="UP" if any(s.status.startswith("UP") for s in servers) else first.status,
                   weight=first.weight, current_sessions=sum(s.current_sessions for s in servers),
                   total_sessions=sum(s.total_sessions for s in servers),
                   responses_total=sum(s.responses_total for s in servers),
                   responses_2xx=sum(s.responses_2xx for s in servers),
                   responses_5xx=sum(s.responses_5xx for s in servers), errors=sum(s.errors for s in servers),
                   avg_response_ms=max(s.avg_response_ms for s in servers), retries=sum(s.retries for s in servers),
                   down_transitions=sum(s.down_transitions for s in servers), replicas=tuple(servers))


    @classmethod
    def summed(cls, live: list[ServerStats], carried: list[ServerStats] | None = None) -> ServerStats:
        """One server as several processes of the proxy count it: the counters of ``live`` (those that
        answer now) and ``carried`` (what processes since restarted, or silent now, had counted)
        summed; its weight, open sessions and response time from ``live``; UP only when every live
        process says so (else the first other status); times taken out: the most any one saw."""
        carried = carried or []
        first = live[0]
        if len(live) == 1 and not carried:
            return first
        every = [*live, *carried]
        status = next((s.status for s in live if s.status != first.status and not s.status.startswith("UP")),
                      first.status)
        widths = {len(s.replicas) for s in every}
        replicas = (tuple(cls.summed([s.replicas[i] for s in live], [s.replicas[i] for s in carried])
                          for i in range(len(first.replicas))) if len(widths) == 1 else ())
        return cls(status=status, weight=first.weight, current_sessions=sum(s.current_sessions for s in live),
                   total_sessions=sum(s.total_sessions for s in every),
                   responses_total=sum(s.responses_total for s in every),
                   responses_2xx=sum(s.responses_2xx for s in every), responses_5xx=sum(s.responses_5xx for s in every),
                   errors=sum(s.errors for s in every), avg_response_ms=max(s.avg_response_ms for s in live),
                   retries=sum(s.retries for s in every), down_transitions=max(s.down_transitions for s in every),
                   replicas=replicas)


class Proxy(Protocol):
    name: str
    config_path: Path

    def running(self) -> bool: ...
    def start(self, weights: dict[str, int], standby: str | None = None) -> None: ...
    def stop(self, timeout: float = 10.0) -> None: ...
    def set_weights(self, weights: dict[str, int]) -> None: ...
    def wait_servers_up(self, color: str, timeout: float) -> bool:
        """Whether the proxy itself, by its own checks, takes every server of ``color`` as up within
        ``timeout`` (seconds; 0: now). A colour the proxy holds down gets none of the traffic its
        weight gives it: with no other colour in rotation, users get 503 until a check passes."""
        ...
    def weights(self) -> dict[str, int]: ...
    def stats(self) -> dict[str, ServerStats]: ...
    def latency(self) -> dict[str, Buckets]: ...
    def set_standby(self, color: str | None) -> None: ...
    def standby(self) -> str | None: ...
    def wait_ready(self, timeout: float) -> bool: ...
    def reconfigure(self) -> bool: ...
    def stopped_processes(self) -> list[str]:
        """The proxy's processes that are not running while another one serves (``up`` starts them)."""
        ...


def check_weights(weights: dict[str, int], names: list[str]) -> None:
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ProxyError(f"no backend named {', '.join(unknown)}; the backends are {', '.join(names)}")
    bad = {k: v for k, v in weights.items() if not 0 <= v <= MAX_WEIGHT}
    if bad:
        raise ProxyError(f"weights must be 0..{MAX_WEIGHT}: {bad}")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, synced: a crash leaves the old file or the new one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def output_tail(proc: subprocess.CompletedProcess[str], lines: int = 5) -> str:
    """The last lines a proxy command printed, for an error message."""
    text = (proc.stderr or proc.stdout or "").strip()
    # HAProxy's [ALERT] and nginx's [emerg] lines say what is wrong; the lines after them only summarise.
    alerts = [line for line in text.splitlines() if "[ALERT]" in line or "[emerg]" in line]
    return "\n".join((alerts or text.splitlines())[-lines:]) or f"exit code {proc.returncode}"


def run_tool(argv: list[str], missing: str, hint: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run a proxy's command-line tool; a missing binary is our error, named with ``missing``."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    except FileNotFoundError:
        raise ProxyError(missing, hint) from None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only its parent has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def stop_process(pid: int, graceful: signal.Signals, timeout: float, name: str) -> None:
    """Ask a proxy to finish its open requests and exit; terminate, then kill, if it lingers."""
    for sig, wait in ((graceful, timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.05)
    raise ProxyError(f"{name} (pid {pid}) did not stop")
