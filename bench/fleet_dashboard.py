"""Benchmark: the fleet dashboard's overview at N = 1, 5 and 20 deployments.

For each N: a fleet of N deployments of bluegreen-model:v1 behind one HAProxy (run as a process),
each routed by a prefix, on free loopback ports; `bluegreen fleet serve` with a token; a light
load through the proxy spread over every deployment. Signed in once, then measured:

- the overview (GET /): median and p95 of --gets requests, one after another, after one warm-up;
- how long one reading of the overview takes (one ``show stat``, one read of the timings ring,
  every deployment's state), as the page says it;
- a deployment's page (GET /d/NAME/): the first, which reads the deployment then, and the next;
- in this process, against the same fleet: one overview reading, and one full reading of every
  deployment as a deployment's page takes it (status with health probes, traffic, journal): what
  N observers reading every second would cost, one reading each per second;
- serve's RSS, and the CPU serve used over --idle seconds while nobody watched any page, and over
  as long again while someone watched the overview (reloading it every 5 s, as a page without
  JavaScript does).

Prints; asserts nothing.    python3 bench/fleet_dashboard.py [--sizes 1,5,20] [--gets 20] [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen.orchestrator.common.ports import free_ports  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
TOKEN = "bench-token-0123456789abcdef"


def run(fleet: Path, *args: str, timeout: float = 600) -> None:
    env = {**os.environ, "BLUEGREEN_FLEET": str(fleet), "BLUEGREEN_ACTOR": "bench"}
    proc = subprocess.run([*BLUEGREEN, *args], env=env, cwd=fleet.parent, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"bluegreen {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def make_fleet(root: Path, n: int, tag: str) -> tuple[Path, int, int, list[str]]:
    """The fleet file and N deployments' directories; returns (fleet file, proxy port, serve port, names)."""
    fleet = root / "fleet.toml"
    ports = free_ports(2 + 2 * n)
    run(fleet, "fleet", "init", str(fleet))
    text = fleet.read_text().replace("port = 8080", f"port = {ports[0]}").replace("port = 9900", f"port = {ports[1]}")
    fleet.write_text(text.replace('supervisor = "container"', 'supervisor = "process"'))
    default = (REPO / "orchestrator" / "settings" / "default.toml").read_text()
    names = []
    for i in range(n):
        name = f"b{tag}{i:02d}"
        names.append(name)
        directory = root / name
        directory.mkdir()
        text = default.replace('project = "bluegreen"', f'project = "{name}"')
        text = text.replace("port = 8101", f"port = {ports[2 + 2 * i]}").replace("port = 8102",
                                                                                   f"port = {ports[3 + 2 * i]}")
        (directory / "bluegreen.toml").write_text(text)
        run(fleet, "fleet", "add", str(directory), "--prefix", f"/{name}")
    return fleet, ports[0], ports[1], names


def cleanup(fleet: Path, names: list[str]) -> None:
    try:
        run(fleet, "fleet", "down", timeout=600)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"  fleet down: {exc}", file=sys.stderr)
    for name in names:
        listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={name}"],
                                capture_output=True, text=True)
        if listed.stdout.split():
            subprocess.run(["docker", "rm", "-f", *listed.stdout.split()], capture_output=True)


class Load:
    """POST /predict round-robin over every deployment's prefix, paced to about ``rate`` requests/s."""

    def __init__(self, url: str, names: list[str], rate: float) -> None:
        self.url, self.names, self.pause = url, names, 1.0 / rate
        self.sent = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import httpx

        i = 0
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(self.pause):
                name = self.names[i % len(self.names)]
                i += 1
                try:
                    ok = client.post(f"{self.url}/{name}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}
                                     ).status_code == 200
                except Exception:
                    ok = False
                self.sent += 1
                self.failed += not ok

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def readings(path: Path, rounds: int = 5) -> tuple[float, float]:
    """Median ms of one overview reading, and of one full reading of every deployment (summed)."""
    from bluegreen.orchestrator.api.fleet import FleetService
    from bluegreen.orchestrator.api.observer import Observer
    from bluegreen.orchestrator.api.overview import Overview
    from bluegreen.orchestrator.core.events import EventLog
    from bluegreen.orchestrator.settings.fleet import load_fleet

    service = FleetService(load_fleet(path), TOKEN, EventLog(100))
    overview = Overview(service)
    observers = [Observer(svc.base) for svc in service.members.values()]
    overview.tick()
    for obs in observers:
        obs.tick()  # the first reading of each: adapters built, counters started
    over, full = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        overview.tick()
        over.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for obs in observers:
            obs.tick()
        full.append((time.perf_counter() - t0) * 1000)
        time.sleep(1.0)  # as the readers would: once a second
    return statistics.median(over), statistics.median(full)


def measure(n: int, gets: int, idle: float, rate: float) -> dict[str, float]:
    import httpx

    tag = os.urandom(2).hex()
    with tempfile.TemporaryDirectory(prefix=f"bench-fleet-ui-{n}-") as tmp:
        root = Path(tmp) / "host"
        root.mkdir()
        fleet, proxy_port, serve_port, names = make_fleet(root, n, tag)
        serve = None
        load = None
        try:
            began = time.monotonic()
            run(fleet, "fleet", "up", timeout=900)
            print(f"  N={n}: fleet up in {time.monotonic() - began:.0f} s", file=sys.stderr)
            log = open(root / "serve.log", "w")  # noqa: SIM115 - closed below
            serve = subprocess.Popen([*BLUEGREEN, "fleet", "serve", "--port", str(serve_port)], cwd=root.parent,
                                     env={**os.environ, "BLUEGREEN_FLEET": str(fleet),
                                          "BLUEGREEN_FLEET_TOKEN": TOKEN},
                                     stdout=log, stderr=subprocess.STDOUT, text=True)
            url = f"http://127.0.0.1:{serve_port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if serve.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fleet serve did not start: {(root / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.2)
            load = Load(f"http://127.0.0.1:{proxy_port}", names, rate)
            overview_ms, full_ms = readings(fleet)
            # Nobody watches: what the overview's quiet readings cost serve.
            cpu0 = cpu_seconds(serve.pid)
            time.sleep(idle)
            idle_cpu = cpu_seconds(serve.pid) - cpu0
            with httpx.Client(base_url=url, timeout=30) as client:
                signed = client.post("/login", data={"token": TOKEN})
                if signed.status_code != 303 or "bluegreen_session" not in client.cookies:
                    raise RuntimeError(f"sign-in failed: {signed.status_code}")
                client.get("/")  # warm-up: wakes the reader to its fast interval
                times, read_ms = [], []
                for _ in range(gets):
                    t0 = time.perf_counter()
                    page = client.get("/")
                    times.append((time.perf_counter() - t0) * 1000)
                    if page.status_code != 200 or names[-1] not in page.text:
                        raise RuntimeError(f"overview answered {page.status_code}")
                    found = re.search(r"Read in (\d+) ms", page.text)
                    if found:
                        read_ms.append(float(found.group(1)))
                t0 = time.perf_counter()
                first = client.get(f"/d/{names[0]}/")
                first_ms = (time.perf_counter() - t0) * 1000
                t0 = time.perf_counter()
                again = client.get(f"/d/{names[0]}/")
                again_ms = (time.perf_counter() - t0) * 1000
                if first.status_code != 200 or again.status_code != 200:
                    raise RuntimeError(f"deployment page answered {first.status_code}, {again.status_code}")
                # Someone watches the overview (a page without JavaScript reloads it every 5 s).
                cpu0 = cpu_seconds(serve.pid)
                end = time.monotonic() + idle
                while time.monotonic() < end:
                    client.get("/")
                    time.sleep(min(5.0, max(0.0, end - time.monotonic())))
                watched_cpu = cpu_seconds(serve.pid) - cpu0
            times.sort()
            return {"n": n, "median_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))],
                    "max_ms": times[-1], "reading_ms": statistics.median(read_ms) if read_ms else float("nan"),
                    "page_first_ms": first_ms, "page_again_ms": again_ms, "rss_mb": rss_mb(serve.pid),
                    "idle_cpu_pct": 100 * idle_cpu / idle,
                    "watched_cpu_pct": 100 * watched_cpu / idle, "overview_ms": overview_ms, "full_ms": full_ms,
                    "load_sent": load.sent, "load_failed": load.failed}
        finally:
            if load is not None:
                load.stop()
            if serve is not None:
                serve.terminate()
                try:
                    serve.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    serve.kill()
            cleanup(fleet, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,5,20", help="fleet sizes, comma-separated")
    parser.add_argument("--gets", type=int, default=20, help="GETs of the overview per size")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds nobody watches, for serve's CPU")
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s through the proxy, all deployments")
    args = parser.parse_args()
    rows = [measure(int(n), args.gets, args.idle, args.rate) for n in args.sizes.split(",")]
    print(f"overview GET / ({args.gets} GETs after one warm-up; load {args.rate:.0f} req/s over all deployments)")
    print(f"{'N':>3} {'median':>8} {'p95':>8} {'max':>8} {'reading':>8} {'page 1st':>9} {'page 2nd':>9} "
          f"{'RSS':>8} {'CPU idle':>9} {'watched':>8} {'overview':>9} {'N pages':>8} {'load failed':>12}")
    for r in rows:
        print(f"{r['n']:>3} {r['median_ms']:>6.1f}ms {r['p95_ms']:>6.1f}ms {r['max_ms']:>6.1f}ms "
              f"{r['reading_ms']:>6.0f}ms {r['page_first_ms']:>7.0f}ms {r['page_again_ms']:>7.0f}ms "
              f"{r['rss_mb']:>6.1f}MB {r['idle_cpu_pct']:>8.1f}% {r['watched_cpu_pct']:>7.1f}% "
              f"{r['overview_ms']:>7.0f}ms {r['full_ms']:>6.0f}ms "
              f"{r['load_failed']:>5} of {r['load_sent']}")


if __name__ == "__main__":
    main()
