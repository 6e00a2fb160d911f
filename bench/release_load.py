"""Benchmark: a release and warm rollbacks under real load, against the physical limits of the same run.

For each proxy driver it brings up a deployment on free loopback ports (v1 live on blue), then:

1. Limits, measured in this run: what one colour answers directly and what the proxy passes,
   wrk as fast as it can with 1 and with 8 kept-alive connections (req/s, p50, p99). The
   difference at 1 connection is the proxy's own added latency.
2. Under a steady load of ``--rate`` requests/s through the proxy (hey, rate-limited, kept-alive
   connections, POST /predict): one full release of v2 (4 steps), then ``--switches`` warm
   rollbacks alternating v1 and v2, each a new ``bluegreen rollback`` process. Reports every
   failed request (non-2xx or socket error; the bar is zero), the release's accounting, and for
   each rollback the time from starting the command to every answer coming from the other version.

Bounded: each load runs for a fixed time. Prints figures; asserts nothing.

    python3 bench/release_load.py [--drivers haproxy,nginx] [--rate 1200] [--switches 10] [--bake 2s]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import write_config  # noqa: E402
from bench.load import POST_LUA, WrkResult, hey_command, parse_hey, wrk  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]


class Deployment:
    def __init__(self, root: Path, driver: str, bake: str) -> None:
        self.root = root
        self.proxy_port = write_config(root, f"bench-{driver}", driver, bake)
        self.blue_port = int(tomllib.loads((root / "bluegreen.toml").read_text())["environments"]["blue"]["port"])
        self.env = {**os.environ, "BLUEGREEN_ACTOR": "bench"}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BLUEGREEN, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              check=True)


class VersionWatcher:
    """Asks GET /version through the proxy every few milliseconds; remembers (time, version)."""

    def __init__(self, url: str, interval: float = 0.005) -> None:
        import httpx

        self.client = httpx.Client(timeout=2)
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                version = self.client.get(f"{self.url}/version").json()["version"]
            except Exception:
                version = "error"
            self.samples.append((time.perf_counter(), version))

    def switch_time(self, t0: float, wanted: str) -> float | None:
        """Seconds from t0 until answers became ``wanted`` and stayed so."""
        after = [(t, v) for t, v in self.samples if t >= t0]
        last_other = max((t for t, v in after if v != wanted), default=t0)
        firsts = [t for t, v in after if v == wanted and t > last_other]
        return (firsts[0] - t0) if firsts else None


def limits(dep: Deployment, seconds: int) -> dict[str, WrkResult]:
    direct, proxied = f"http://127.0.0.1:{dep.blue_port}/predict", f"http://127.0.0.1:{dep.proxy_port}/predict"
    return {"direct, 1 connection": wrk(direct, seconds, 1, 1, POST_LUA),
            "proxy, 1 connection": wrk(proxied, seconds, 1, 1, POST_LUA),
            "direct, 8 connections": wrk(direct, seconds, 2, 8, POST_LUA),
            "proxy, 8 connections": wrk(proxied, seconds, 2, 8, POST_LUA)}


def under_load(dep: Deployment, rate: float, switches: int, duration: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{dep.proxy_port}"
    load = subprocess.Popen(hey_command(f"{url}/predict", duration, 16, rate), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    began = time.perf_counter()
    release = json.loads(dep.run("release", "bluegreen-model:v2", "--json").stdout)
    release_wall = time.perf_counter() - began
    watcher = VersionWatcher(url)
    watcher.thread.start()
    seen, inside = [], []
    for i in range(switches):
        wanted = "v1" if i % 2 == 0 else "v2"
        time.sleep(0.3)
        t0 = time.perf_counter()
        args = ["rollback", "--json"] if i % 2 == 0 else ["rollback", "--to", "v2", "--json"]
        doc = json.loads(dep.run(*args).stdout)
        time.sleep(0.5)
        if (s := watcher.switch_time(t0, wanted)) is not None:
            seen.append(s)
        inside.append(float(doc["seconds"]))
    watcher.stop.set()
    watcher.thread.join()
    busy = time.perf_counter() - began + 2
    out, _ = load.communicate(timeout=duration + 60)
    return {"load": parse_hey(out), "release": release, "release_wall": release_wall, "rollback_seen": seen,
            "rollback_inside": inside, "ops_seconds": busy, "duration": duration,
            "watcher_errors": sum(1 for _, v in watcher.samples if v == "error")}


def bench_driver(driver: str, rate: float, switches: int, bake: str, seconds: int, duration: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{driver}-") as tmp:
        dep = Deployment(Path(tmp), driver, bake)
        dep.run("up")
        try:
            floor = [_timed([sys.executable, "-c", "pass"]) for _ in range(5)]
            result = {"driver": driver, "limits": limits(dep, seconds), **under_load(dep, rate, switches, duration)}
            result["interpreter_floor"] = statistics.median(floor)
            return result
        finally:
            subprocess.run([*BLUEGREEN, "down"], cwd=dep.root, env=dep.env, capture_output=True)


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def report(results: list[dict[str, Any]], rate: float, switches: int, bake: str) -> None:
    print("Limits measured in this run (wrk, POST /predict, as fast as it goes):")
    print(f"{'driver':<8} {'path':<24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    for r in results:
        for name, w in r["limits"].items():
            print(f"{r['driver']:<8} {name:<24} {w.rps:>8.0f} {w.p50_ms:>8.2f} {w.p99_ms:>8.2f} {w.failed:>7}")
        one_d, one_p = r["limits"]["direct, 1 connection"], r["limits"]["proxy, 1 connection"]
        eight_d, eight_p = r["limits"]["direct, 8 connections"], r["limits"]["proxy, 8 connections"]
        print(f"{r['driver']:<8} added by the proxy: p50 {one_p.p50_ms - one_d.p50_ms:+.2f} ms, p99 "
              f"{one_p.p99_ms - one_d.p99_ms:+.2f} ms at 1 connection; throughput proxy/direct at 8 "
              f"connections {eight_p.rps / max(eight_d.rps, 1):.2f}")
    print()
    print(f"Under load: hey, 16 kept-alive connections at {rate:.0f} req/s through the proxy, during one full "
          f"release (bake {bake} x 4 steps) and {switches} warm rollbacks")
    print(f"{'driver':<8} {'requests':>9} {'req/s':>7} {'non-2xx':>8} {'errors':>7} {'failed':>7} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7}")
    for r in results:
        w = r["load"]
        print(f"{r['driver']:<8} {w.requests:>9} {w.rps:>7.0f} {w.non_2xx:>8} {w.socket_errors:>7} {w.failed:>7} "
              f"{w.p50_ms:>7.2f} {w.p99_ms:>7.2f} {w.max_ms:>7.1f}")
        if r["ops_seconds"] > r["duration"]:
            print(f"  (the release and rollbacks took {r['ops_seconds']:.0f} s, longer than the load's "
                  f"{r['duration']} s: the last of them ran without it)")
    print()
    for r in results:
        seen, inside = r["rollback_seen"], r["rollback_inside"]
        if seen:
            print(f"{r['driver']}: rollback, from starting `bluegreen rollback` to every answer from the other "
                  f"version: median {statistics.median(seen) * 1000:.0f} ms (min {min(seen) * 1000:.0f}, max "
                  f"{max(seen) * 1000:.0f}, n={len(seen)}); the switch inside the command: median "
                  f"{statistics.median(inside) * 1000:.0f} ms; interpreter floor (python3 -c pass) "
                  f"{r['interpreter_floor'] * 1000:.0f} ms")
        rel = r["release"]
        overhead = rel["seconds"] - rel["bake_seconds"] - rel["start_seconds"]
        gate = next(s for s in rel["steps"] if s["name"] == "gate")
        replayed = gate.get("replay", {}).get("requests", 0)
        print(f"{r['driver']}: release {rel['seconds']:.2f}s = bake {rel['bake_seconds']:.2f}s + container start "
              f"{rel['start_seconds']:.2f}s + orchestrator {overhead:.2f}s (backup, gate, quality checks, analysis, "
              f"journal); CLI process wall time {r['release_wall']:.2f}s")
        print(f"{r['driver']}: the gate's quality work (holdout on both colours + {replayed} replayed requests on "
              f"both) {rel['quality_seconds']:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drivers", default="haproxy,nginx")
    parser.add_argument("--rate", type=float, default=1200.0, help="requests/s through the proxy during the run")
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--bake", default="2s")
    parser.add_argument("--seconds", type=int, default=5, help="length of each limit measurement")
    parser.add_argument("--duration", type=int, default=45, help="length of the load during release and rollbacks")
    args = parser.parse_args()
    results = [bench_driver(d, args.rate, args.switches, args.bake, args.seconds, args.duration)
               for d in args.drivers.split(",")]
    report(results, args.rate, args.switches, args.bake)


if __name__ == "__main__":
    main()
