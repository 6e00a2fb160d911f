"""Benchmark: failing safe between releases, under a steady load through the proxy.

- failover: `docker kill` of the live colour (v2) while v1 stands by: time to the first answer
  from the standby, and the requests that failed meanwhile (median of --runs), HAProxy and nginx;
- supervision: kill -9 of the proxy process (its container restarts it): time to the first
  answer again;
- detection: a candidate with 5 % and one with 50 % errors on user traffic (probes spared, so
  it passes its gate) at the default 30 s bake: time from its first shifted request to all traffic
  back, and user-visible failed requests (median of --runs);
- the shielded canary: user-visible failures from a 5 %-error candidate with and without it;
- false rollbacks: --healthy releases of a healthy candidate under the same load.

The load is hey, rate-limited (--rate requests/s over 16 kept-alive connections, bounded in time);
a watcher polls GET /version through the proxy every 5 ms to time switches. Prints; asserts nothing.

    python3 bench/failover.py [--rate 1200] [--runs 5] [--healthy 20] [--drivers haproxy,nginx]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import write_config  # noqa: E402
from bench.load import hey_command, parse_hey  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]


class Watcher:
    """GET /version through the proxy every few milliseconds: (time, version or "error")."""

    def __init__(self, url: str) -> None:
        import httpx

        self.client = httpx.Client(timeout=2)
        self.url = url
        self.samples: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.005):
            try:
                version = self.client.get(f"{self.url}/version").json()["version"]
            except Exception:
                version = "error"
            self.samples.append((time.monotonic(), version))

    def first(self, after: float, version: str) -> float | None:
        return next((t - after for t, v in self.samples if t > after and v == version), None)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.client.close()


class Deployment:
    def __init__(self, root: Path, driver: str, project: str, extra: dict[str, str] | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.project = project
        self.port = write_config(root, project, driver, "0.2s")
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "BLUEGREEN_ACTOR": "bench", **(extra or {})}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BLUEGREEN, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              check=check)

    def live(self) -> dict[str, Any]:
        return json.loads(self.run("status", "--json").stdout)  # type: ignore[no-any-return]

    def green_live_blue_warm(self) -> None:
        """v2 live on green, v1 warm on blue: the state a failover starts from."""
        s = self.live()
        if s["live"] == "green" and s.get("standby") == "blue":
            return
        if s["live"] == "green":
            self.run("rollback")
        self.run("release", "bluegreen-model:v2", "--steps", "100")


def load(url: str, rate: float, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(hey_command(f"{url}/predict", seconds, 16, rate), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(hey: subprocess.Popen[str]) -> str:
    """Stop hey early the way it reports (SIGINT: it prints its summary; SIGTERM would lose it)."""
    if hey.poll() is None:
        hey.send_signal(signal.SIGINT)
    return hey.communicate(timeout=60)[0]


def failover(dep: Deployment, rate: float, runs: int) -> list[tuple[float | None, int, int]]:
    out = []
    for _ in range(runs):
        dep.green_live_blue_warm()
        watcher = Watcher(dep.url)
        hey = load(dep.url, rate, 6)
        time.sleep(2)
        t0 = time.monotonic()
        subprocess.run(["docker", "kill", f"{dep.project}-green"], check=True, capture_output=True)
        time.sleep(3.5)
        result = parse_hey(hey.communicate(timeout=60)[0])
        watcher.close()
        out.append((watcher.first(t0, "v1"), result.failed, result.requests))
        dep.run("recover")  # makes the failover official: blue live
    return out


def proxy_restart(dep: Deployment, rate: float) -> tuple[float | None, int, int]:
    dep.green_live_blue_warm()
    watcher = Watcher(dep.url)
    hey = load(dep.url, rate, 8)
    time.sleep(2)
    pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", f"{dep.project}-proxy"],
                             capture_output=True, text=True, check=True).stdout)
    t0 = time.monotonic()
    os.kill(pid, 9)
    time.sleep(0.2)
    result = parse_hey(hey.communicate(timeout=60)[0])
    watcher.close()
    back = next((t - t0 for t, v in watcher.samples if t > t0 + 0.05 and v != "error"), None)
    return back, result.failed, result.requests


def detection(dep: Deployment, rate: float, error_rate: float, runs: int) -> list[tuple[float, int, int]]:
    out = []
    for _ in range(runs):
        s = dep.live()
        if s["live"] != "blue":
            dep.run("rollback")
        hey = load(dep.url, rate, 40)
        time.sleep(1)
        proc = subprocess.Popen([*BLUEGREEN, "release", "bluegreen-model:v2", "--env", f"FAULT_ERROR_RATE={error_rate}",
                                 "--env", "FAULT_SPARE_PROBES=1", "--bake", "30s"], cwd=dep.root, env=dep.env,
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        shifted = back = None
        assert proc.stderr is not None
        for line in proc.stderr:
            if "shift-10: 10% to green" in line:
                shifted = time.monotonic()
            if "traffic: 100% blue" in line and shifted is not None:
                back = time.monotonic()
        proc.wait()
        result = parse_hey(finish(hey))
        out.append(((back - shifted) if shifted and back else float("nan"), result.failed, result.requests))
    return out


def shield(root: Path, rate: float, shielded: bool) -> tuple[int, int, str]:
    extra = {"BLUEGREEN_PROXY__RETRY_CANDIDATE_FAILURES": "true" if shielded else "false"}
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        dep = Deployment(Path(tmp), "haproxy", f"bench-shield-{'on' if shielded else 'off'}", extra)
        dep.run("up")
        try:
            hey = load(dep.url, rate, 15)
            time.sleep(1)
            rel = dep.run("release", "bluegreen-model:v2", "--env", "FAULT_ERROR_RATE=0.05", "--env",
                          "FAULT_SPARE_PROBES=1", "--steps", "10,25,50,100", "--bake", "3s", check=False)
            result = parse_hey(finish(hey))
            verdict = "stopped" if rel.returncode == 11 else f"exit {rel.returncode}"
            return result.failed, result.requests, verdict
        finally:
            dep.run("down", check=False)


def healthy(dep: Deployment, rate: float, n: int) -> tuple[int, int]:
    failed_releases = failed_requests = 0
    hey = load(dep.url, rate, 10_000)
    try:
        for i in range(n):
            s = dep.live()
            image = "bluegreen-model:v2" if s["environments"][s["live"]]["version"] == "v1" else "bluegreen-model:v1"
            rel = dep.run("release", image, "--steps", "10,50,100", "--bake", "2s", check=False)
            if rel.returncode != 0:
                failed_releases += 1
                print(f"  healthy release {i + 1} failed: {rel.stderr.strip().splitlines()[-3:]}")
    finally:
        failed_requests = parse_hey(finish(hey)).failed
    return failed_releases, failed_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1200.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--healthy", type=int, default=20)
    parser.add_argument("--drivers", default="haproxy,nginx")
    parser.add_argument("--only", default="failover,proxy,detection,healthy,shield",
                        help="which measurements, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"Load: hey, 16 kept-alive connections at {args.rate:.0f} req/s through the proxy, POST /predict\n")
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        root = Path(tmp)
        for driver in args.drivers.split(","):
            dep = Deployment(root / driver, driver, f"bench-fo-{driver}")
            dep.run("up")
            try:
                if "failover" in only:
                    fo = failover(dep, args.rate, args.runs)
                    times = [t for t, _f, _n in fo if t is not None]
                    print(f"{driver}: failover (docker kill of the live colour, v1 standing by), n={len(fo)}")
                    for t, f, n in fo:
                        print(f"    first answer from the standby after {t * 1000:.0f} ms; {f} failed of {n}"
                              if t is not None else f"    the standby never answered; {f} failed of {n}")
                    if times:
                        print(f"  median {statistics.median(times) * 1000:.0f} ms, failed requests median "
                              f"{statistics.median(f for _t, f, _n in fo):.0f}")
                if "proxy" in only:
                    back, f, n = proxy_restart(dep, args.rate)
                    print(f"{driver}: kill -9 of the proxy process: answering again after "
                          f"{'never' if back is None else f'{back * 1000:.0f} ms'}; {f} failed of {n} in 8 s")
                if driver == "haproxy" and "detection" in only:
                    for rate_of_errors in (0.05, 0.5):
                        det = detection(dep, args.rate, rate_of_errors, args.runs)
                        print(f"{driver}: a {rate_of_errors:.0%}-error candidate, 30 s bakes, n={len(det)}: "
                              f"traffic back after median {statistics.median(d for d, _f, _n in det):.2f} s "
                              f"(each: {', '.join(f'{d:.2f}' for d, _f, _n in det)}); user-visible failed "
                              f"requests median {statistics.median(f for _d, f, _n in det):.0f} "
                              f"(each: {', '.join(str(f) for _d, f, _n in det)})")
                if driver == "haproxy" and "healthy" in only:
                    bad, lost = healthy(dep, args.rate, args.healthy)
                    print(f"{driver}: {args.healthy} healthy releases under load: {bad} rolled back; "
                          f"{lost} failed requests")
            finally:
                dep.run("down", check=False)
        for shielded in (False, True) if "shield" in only else ():
            f, n, verdict = shield(root, args.rate, shielded)
            print(f"haproxy: a 5%-error candidate, shield {'on ' if shielded else 'off'}: {f} user-visible failed "
                  f"of {n}; release {verdict}")


if __name__ == "__main__":
    main()
