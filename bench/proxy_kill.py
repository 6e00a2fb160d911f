"""Benchmark: what a kill -9 of the proxy costs under load, one HAProxy against two sharing the listener.

For the single-deployment proxy and the fleet's shared proxy, under each supervisor (``container``:
the engine restarts a dead proxy; ``process``: nothing does until ``up``), with ``processes = 1``
(before: one HAProxy, as every proxy ran until now) and ``processes = 2`` (after: two HAProxy
instances bound to the same port with SO_REUSEPORT, the same configuration files, one runtime socket
each): kill -9 of instance 1's worker, then of its master, while hey sends --rate requests/s over 16
kept-alive connections through the proxy (POST /predict, --seconds in all, the kill after 2 s).
The arrangements' trials are interleaved, so the machine's other work weighs on both alike.

Printed per kill: the failed requests (of the load's total), the client connections the killed
instance held just before (its CurrConns: hey's and the watcher's on it), the time from the kill to
the first good answer to a watcher that GETs /version through the proxy every 5 ms (sent after the
kill), and the time until the killed instance answers on its runtime socket again (its supervisor
restarted it; ``process``: never, until ``bluegreen up``, which the benchmark then runs). A kill
waits until instance 1 has run for 11 s: the engine doubles the restart delay of a container that
dies sooner, which would measure that back-off rather than one kill. Asserts nothing.

    python3 bench/proxy_kill.py [--rate 1200] [--runs 3] [--seconds 8] [--processes 1,2]
                                [--modes single,fleet] [--supervisors container,process]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import free_ports, write_config  # noqa: E402
from bench.load import hey_command, parse_hey  # noqa: E402
from bluegreen.orchestrator.proxy.instances import runtime_command, socket_path  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
CONNECTIONS = 16
KILL_AFTER = 2.0
SETTLE = 11.0


class Watcher:
    """GET /version through the proxy every 5 ms on one kept-alive client: (sent at, answered at, ok)."""

    def __init__(self, url: str) -> None:
        import httpx

        self.client = httpx.Client(timeout=2)
        self.url = url
        self.samples: list[tuple[float, float, bool]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.005):
            sent = time.monotonic()
            try:
                ok = self.client.get(f"{self.url}/version").status_code == 200
            except Exception:
                ok = False
            self.samples.append((sent, time.monotonic(), ok))

    def first_good(self, after: float) -> float | None:
        """Seconds from ``after`` to the first good answer to a request sent after it."""
        return next((done - after for sent, done, ok in self.samples if sent >= after and ok), None)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


@dataclass
class Arrangement:
    """One proxy under test: a deployment on its own proxy, or a fleet of one member on the shared proxy."""

    mode: str  # single | fleet
    supervisor: str  # container | process
    processes: int
    root: Path
    port: int = 0
    prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)
    started: float = 0.0  # when instance 1 last (re)started
    last_master: int | None = None

    @property
    def label(self) -> str:
        return f"{self.mode}/{self.supervisor}/{self.processes}p"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def proxy_dir(self) -> Path:
        return self.root / (".bluegreen-fleet" if self.mode == "fleet" else "member/.bluegreen/haproxy")

    @property
    def container(self) -> str:
        return f"bluegreen-fleet-{self.root.name}" if self.mode == "fleet" else f"{self.root.name}-proxy"

    def setup(self) -> None:
        self.root.mkdir(parents=True)
        member = self.root / "member"
        member.mkdir()
        self.env = {**os.environ, "BLUEGREEN_ACTOR": "bench"}
        own_port = write_config(member, self.root.name)
        text = (member / "bluegreen.toml").read_text()
        if self.mode == "single":
            self.port = own_port
            text = text.replace('supervisor = "container"', f'supervisor = "{self.supervisor}"')
            text = text.replace("\nprocesses = 1\n", f"\nprocesses = {self.processes}\n")
            (member / "bluegreen.toml").write_text(text)
            return
        fleet = self.root / "fleet.toml"
        self.env["BLUEGREEN_FLEET"] = str(fleet)
        self.run("fleet", "init", str(fleet))
        self.port, serve_port = free_ports(2)
        text = fleet.read_text().replace("port = 8080", f"port = {self.port}")
        text = text.replace("port = 9900", f"port = {serve_port}")
        text = text.replace('supervisor = "container"', f'supervisor = "{self.supervisor}"')
        fleet.write_text(text.replace("\nprocesses = 2\n", f"\nprocesses = {self.processes}\n"))
        self.prefix = "/m"
        self.run("fleet", "add", str(member), "--prefix", self.prefix)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cwd = self.root / "member" if self.mode == "single" else self.root
        proc = subprocess.run([*BLUEGREEN, *args], cwd=cwd, env=self.env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.label}: bluegreen {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def up(self) -> None:
        self.run(*(("fleet", "up") if self.mode == "fleet" else ("up",)))
        deadline = time.monotonic() + 30
        while not all(self.answers(i) for i in range(1, self.processes + 1)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: the proxy's instances do not all answer after up")
            time.sleep(0.05)
        if self.master(1) != self.last_master:
            self.started, self.last_master = time.monotonic(), self.master(1)

    def down(self) -> None:
        self.run(*(("fleet", "down") if self.mode == "fleet" else ("down",)), check=False)

    # -- one instance of the proxy: its master, its worker, its socket ----------------------------
    def socket(self, instance: int) -> Path:
        return socket_path(self.proxy_dir, instance)

    def answers(self, instance: int) -> bool:
        try:
            runtime_command(self.socket(instance), "show info")
            return True
        except Exception:
            return False

    def connections(self, instance: int) -> int:
        """The connections an instance holds now (``show info``: CurrConns)."""
        try:
            info = runtime_command(self.socket(instance), "show info")
        except Exception:
            return 0
        return next((int(line.split(": ")[1]) for line in info.splitlines() if line.startswith("CurrConns: ")), 0)

    def master(self, instance: int) -> int | None:
        if self.supervisor == "container":
            name = self.container if instance == 1 else f"{self.container}-{instance}"
            out = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name], capture_output=True,
                                 text=True).stdout.strip()
            return int(out) if out and out != "0" else None
        pid_file = self.proxy_dir / ("haproxy.pid" if instance == 1 else f"haproxy-{instance}.pid")
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().split()[0])
            if Path(f"/proc/{pid}").exists():
                return pid
        return None

    def worker(self, instance: int) -> int | None:
        master = self.master(instance)
        if master is None:
            return None
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return int(children[0]) if children else None


@dataclass
class Trial:
    failed: int
    requests: int
    rps: float
    first_good: float | None
    back: float | None
    held: int  # connections the killed instance held just before the kill
    kinds: str = ""  # what the failed requests got, as hey reports it


def trial(arr: Arrangement, target: str, rate: float, seconds: float) -> Trial:
    """kill -9 of instance 1's worker or master under load, once it has run for SETTLE seconds."""
    # The engine doubles a container's restart delay (from 100 ms) each time it dies within 10 s of
    # starting: a kill measured sooner would measure that back-off, not one kill.
    time.sleep(max(0.0, arr.started + SETTLE - time.monotonic()))
    watcher = Watcher(arr.url)
    hey = subprocess.Popen(hey_command(f"{arr.url}/predict", seconds, CONNECTIONS, rate), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    time.sleep(KILL_AFTER)
    pid = arr.worker(1) if target == "worker" else arr.master(1)
    if pid is None:
        raise RuntimeError(f"{arr.label}: no {target} process to kill")
    killed_master = arr.master(1)
    held = arr.connections(1)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    back = None
    end = t0 + seconds - KILL_AFTER
    while time.monotonic() < end:
        master = arr.master(1)
        if master is not None and master != killed_master and arr.answers(1):
            back = time.monotonic() - t0
            arr.started, arr.last_master = time.monotonic(), master
            break
        time.sleep(0.01)
    result = parse_hey(hey.communicate(timeout=seconds + 60)[0])
    watcher.close()
    return Trial(result.failed, result.requests, result.rps, watcher.first_good(t0), back, held, kinds(result.raw))


def kinds(hey_output: str) -> str:
    """hey's non-2xx status codes and error distribution, one line: '[12] EOF; [3] connection reset by peer'."""
    out = [f"[{n}] HTTP {code}" for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", hey_output)
           if not code.startswith("2")]
    for n, text in re.findall(r"^\s+\[(\d+)\]\s+(?!\d+ responses)(.*)$", hey_output, re.MULTILINE):
        out.append(f"[{n}] {text.split(': ')[-1] if ': ' in text else text}")
    return "; ".join(out)


def ms(value: float | None) -> str:
    return "never" if value is None else f"{value * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1200.0, help="requests/s in all")
    parser.add_argument("--runs", type=int, default=3, help="kills of each kind per arrangement")
    parser.add_argument("--seconds", type=float, default=8.0, help="the load's length per kill")
    parser.add_argument("--processes", default="1,2", help="the arrangements compared: HAProxy instances")
    parser.add_argument("--modes", default="single,fleet")
    parser.add_argument("--supervisors", default="container,process")
    parser.add_argument("--why", action="store_true", help="print what each kill's failed requests got")
    args = parser.parse_args()
    print(f"Load: hey, {CONNECTIONS} kept-alive connections at {args.rate:.0f} req/s through the proxy, "
          f"POST /predict, {args.seconds:.0f} s per kill (the kill after {KILL_AFTER:.0f} s)\n")
    results: dict[tuple[str, str], list[Trial]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pk-") as tmp:
        for mode in args.modes.split(","):
            for supervisor in args.supervisors.split(","):
                arrangements = [Arrangement(mode, supervisor, int(n), Path(tmp) / f"pk{mode[0]}{supervisor[0]}{n}")
                                for n in args.processes.split(",")]
                try:
                    for arr in arrangements:
                        arr.setup()
                        arr.up()
                    for run in range(args.runs):
                        for target in ("worker", "master"):
                            for arr in arrangements:  # interleaved: before and after under the same noise
                                t = trial(arr, target, args.rate, args.seconds)
                                results.setdefault((arr.label, target), []).append(t)
                                print(f"{arr.label:22} kill -9 {target:6} run {run + 1}: {t.failed:5} failed of "
                                      f"{t.requests} ({t.rps:.0f} req/s); it held {t.held} connections; first "
                                      f"good answer after {ms(t.first_good)}; instance back after {ms(t.back)}"
                                      + (f"\n{'':27}failures: {t.kinds[:200]}" if args.why and t.kinds else ""),
                                      flush=True)
                                arr.up()  # process supervisor: nothing restarted it; up does
                finally:
                    for arr in arrangements:
                        arr.down()
    print("\nSummary (median of the runs; each run's failed requests in brackets)")
    print(f"{'arrangement':22} {'kill -9':7} {'failed':>8} {'held':>5} {'first good answer':>18} "
          f"{'instance back':>14}")
    for (label, target), trials in results.items():
        firsts = [t.first_good for t in trials if t.first_good is not None]
        backs = [t.back for t in trials if t.back is not None]
        print(f"{label:22} {target:7} {statistics.median(t.failed for t in trials):8.0f} "
              f"{statistics.median(t.held for t in trials):5.0f} "
              f"{ms(statistics.median(firsts)) if firsts else 'never':>18} "
              f"{ms(statistics.median(backs)) if backs else 'never':>14}   "
              f"[{', '.join(str(t.failed) for t in trials)}] of ~{statistics.median(t.requests for t in trials):.0f} "
              f"at ~{statistics.median(t.rps for t in trials):.0f} req/s")


if __name__ == "__main__":
    main()
