"""The processes of one HAProxy proxy: one, or several sharing its listener, so that the death of one
costs only the connections it held.

HAProxy's own master cannot give that. When its worker dies the master exits too, and when the
master dies the worker follows: in 2.6 (checked here) even ``master-worker no-exit-on-failure``
does not keep it (its log says "exit-on-failure" and it leaves), and a master starts a worker only
on a reload. The listener is closed until the supervisor has started the whole instance again:
hundreds of requests fail at 1,000 req/s (bench/proxy_kill.py).

With ``processes = N`` the proxy is N independent HAProxy instances (each a master and its worker,
each under its own supervisor), started from the same configuration files and bound to the same
address: HAProxy sets SO_REUSEPORT on Linux, so the kernel spreads new connections among them.
When one dies, the connections it held fail (the requests in flight on them, those waiting in its
accept queue); new connections reach a survivor at once while the supervisor restarts the dead one.
Each has a runtime socket of its own: the configuration names ``$BLUEGREEN_HAPROXY_SOCKET``, with
the first process's socket as its default, and each process is started with its own.

The runtime state stays the same in all of them: a live change is saved in the configuration
first, then sent to every process that runs (one starting is waited for); a process that is not
running reads the saved file when it starts, so it comes back with every change made while it was
away.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bluegreen.orchestrator.errors import ProxyError
from bluegreen.orchestrator.proxy.supervise import Supervisor, numbered

SOCKET_VARIABLE = "BLUEGREEN_HAPROXY_SOCKET"
MAX_SOCKET_PATH = 97  # HAProxy refuses longer unix socket paths ("too long (max 97)")
MAX_PROCESSES = 4
START_WAIT = 10.0  # seconds a process that runs may take to answer on its socket (starting, reloading)


def socket_path(directory: Path, number: int = 1) -> Path:
    """A process's admin socket: in the state directory, or in a private /tmp folder when that path is
    too long for HAProxy. The others' names are as long as the first's (``adm-2.sock``): where the
    first fits, they do."""
    name = "admin.sock" if number == 1 else f"adm-{number}.sock"
    path = directory / "admin.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path.with_name(name)
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return Path("/tmp") / f"bluegreen-haproxy-{digest}" / name


def stats_socket(first: Path, processes: int) -> str:
    """The ``stats socket`` path of the global section: the path itself for one process; for several,
    the variable each one is started with, the first one's path as its default (so a process started
    without it, as every proxy was before, keeps its socket)."""
    return str(first) if processes == 1 else f'"${{{SOCKET_VARIABLE}-{first}}}"'


def runtime_command(path: Path, line: str) -> str:
    """One command to HAProxy's runtime API on its unix socket, and the answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise ProxyError(f"haproxy's runtime socket {path} does not answer: {exc}") from None
    return b"".join(chunks).decode()


def poll(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@dataclass(frozen=True)
class Process:
    """One HAProxy instance of the proxy (a master and its worker): its number, socket, pid file, supervisor."""

    number: int
    socket_path: Path
    pid_path: Path
    supervisor: Supervisor

    @property
    def env(self) -> dict[str, str]:
        return {SOCKET_VARIABLE: str(self.socket_path)}

    def command(self, line: str) -> str:
        return runtime_command(self.socket_path, line)

    def answers(self) -> bool:
        try:
            self.command("show info")
            return True
        except ProxyError:
            return False

    def running(self) -> bool:
        return self.supervisor.running()

    def identity(self) -> tuple[int, int]:
        """(worker pid, seconds it has run). A later reading from the same worker has the same pid and
        no fewer seconds; a restart or a reload gives another pid or (in a container, where pids
        repeat) fewer seconds."""
        info = dict(line.split(": ", 1) for line in self.command("show info").splitlines() if ": " in line)
        try:
            return int(info["Pid"]), int(info["Uptime_sec"])
        except (KeyError, ValueError):
            raise ProxyError(f"unexpected answer to 'show info' from {self.socket_path}") from None

    def reload(self) -> None:
        """A seamless reload (SIGUSR2 to the master), waited for: its new worker answers."""
        if not poll(self.answers, START_WAIT):
            raise ProxyError(f"haproxy (process {self.number}) runs but its runtime socket {self.socket_path} does "
                             "not answer")
        before = self.identity()[0]
        self.supervisor.send_signal(signal.SIGUSR2)

        def reloaded() -> bool:
            try:
                return self.identity()[0] != before
            except ProxyError:
                return False

        if not poll(reloaded, START_WAIT):
            raise ProxyError(f"haproxy (process {self.number}) did not come back after reloading its configuration")


class Processes:
    """The proxy's processes: ``count`` of them, the first named as a proxy of one process always was."""

    def __init__(self, directory: Path, pid_path: Path, count: int, supervisor: Supervisor) -> None:
        if not 1 <= count <= MAX_PROCESSES:
            raise ProxyError(f"a proxy runs 1 to {MAX_PROCESSES} processes, not {count}")
        self.count = count
        self._directory = directory
        self._first = socket_path(directory)
        self._pid_path = pid_path
        self._supervisor = supervisor
        self.all = [self._process(n) for n in range(1, count + 1)]

    def _process(self, number: int) -> Process:
        return Process(number, socket_path(self._directory, number), numbered(self._pid_path, number),
                       self._supervisor if number == 1 else self._supervisor.sibling(number))

    def __iter__(self) -> Iterator[Process]:
        return iter(self.all)

    @property
    def first(self) -> Process:
        return self.all[0]

    def stats_socket(self) -> str:
        return stats_socket(self._first, self.count)

    def running(self) -> list[Process]:
        return [p for p in self.all if p.running()]

    def any_running(self) -> bool:
        """Whether the proxy runs: one running process serves (the first asked first, and alone if it runs)."""
        return any(p.running() for p in self.all)

    def stopped(self) -> list[Process]:
        return [p for p in self.all if not p.running()]

    def surplus(self) -> list[Process]:
        """Processes beyond ``count`` that still run (the setting was lowered)."""
        extra = (self._process(n) for n in range(self.count + 1, MAX_PROCESSES + 1))
        return [p for p in extra if p.running()]

    def command(self, line: str) -> str:
        """One process's answer: the first that answers (every process holds the same state)."""
        error: ProxyError | None = None
        for p in self.all:
            try:
                return p.command(line)
            except ProxyError as exc:
                error = error or exc
        assert error is not None
        raise error

    def answering(self) -> list[Process]:
        return [p for p in self.all if p.answers()]

    def send(self, lines: list[str]) -> list[str]:
        """Each line to every process that runs; the answers (a non-empty one is a refusal) by line.

        A process that runs but does not answer yet (starting, restarting) is waited for, up to
        START_WAIT; one that is not running is left out: it reads the saved configuration when it
        starts, so save before sending.
        """
        answers = [""] * len(lines)
        for p in self.all:
            deadline = time.monotonic() + START_WAIT
            while True:
                try:
                    got = [p.command(line).strip() for line in lines]  # idempotent: sent again whole
                    break
                except ProxyError as exc:
                    if not p.running():
                        got = []
                        break
                    if time.monotonic() >= deadline:
                        raise ProxyError(f"the proxy's process {p.number} runs but does not answer: {exc.message}",
                                         "bluegreen status; the other processes and the saved configuration have "
                                         "the change: restart that one (runbooks/failover.md)") from None
                    time.sleep(0.05)
            for i, answer in enumerate(got):
                answers[i] = answers[i] or answer
        return answers

    def start(self, processes: list[Process], argv: Callable[[Process], list[str]]) -> None:
        """Start ``processes`` under their supervisors and wait until each answers on its socket."""
        for p in processes:
            with contextlib.suppress(FileNotFoundError):
                p.socket_path.unlink()
            p.supervisor.start(argv(p), p.env)
        for p in processes:
            if not poll(p.answers, START_WAIT):
                raise ProxyError(f"haproxy (process {p.number}) started but its runtime socket {p.socket_path} "
                                 "does not answer")

    def stop(self, timeout: float) -> None:
        """Soft-stop every process (and any beyond ``count``), each finishing its open requests."""
        for p in [*self.all, *self.surplus()]:
            p.supervisor.stop(signal.SIGUSR1, timeout)
            with contextlib.suppress(FileNotFoundError):
                p.socket_path.unlink()
