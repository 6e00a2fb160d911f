"""Benchmark: failed requests under load during a release and rollbacks, rollback time, overhead.

For each proxy driver (HAProxy, nginx) it brings up a deployment on free loopback ports, runs wrk
(bounded: 8 connections, fixed duration) sending POST /predict through the proxy, and during that
load runs a full release of v2 followed by alternating warm rollbacks. It prints wrk's non-2xx
responses and socket errors (the bar is zero), the rollback time seen by a client, and the
orchestrator's overhead in a release. Prints figures; asserts nothing.

    python3 bench/release_load.py [--drivers haproxy,nginx] [--switches 10] [--bake 2s]
"""

from __future__ import annotations

import argparse
import json
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

from bench.deployments import write_config  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
LUA = """
wrk.method = "POST"
wrk.body = '{"features": [5.1, 3.5, 1.4, 0.2]}'
wrk.headers["Content-Type"] = "application/json"
"""


class Deployment:
    def __init__(self, root: Path, driver: str, bake: str) -> None:
        self.root = root
        self.proxy_port = write_config(root, f"bench-{driver}", driver, bake)
        self.env = {**os.environ, "BLUEGREEN_ACTOR": "bench"}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BLUEGREEN, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              check=True)


def parse_wrk(text: str) -> dict[str, float]:
    def grab(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0

    socket_errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    return {"requests": grab(r"(\d+) requests in"), "non_2xx": grab(r"Non-2xx or 3xx responses: (\d+)"),
            "socket_errors": float(socket_errors), "rps": grab(r"Requests/sec:\s+([\d.]+)")}


class VersionWatcher:
    """Polls GET /version through the proxy; remembers (time, version) of every answer."""

    def __init__(self, url: str) -> None:
        import httpx

        self.client = httpx.Client(timeout=2)
        self.url = url
        self.samples: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                version = self.client.get(f"{self.url}/version").json()["version"]
                self.samples.append((time.perf_counter(), version))
            except Exception:
                self.samples.append((time.perf_counter(), "error"))

    def switch_time(self, t0: float, wanted: str) -> float | None:
        """Seconds from t0 until answers became `wanted` and stayed so."""
        after = [(t, v) for t, v in self.samples if t >= t0]
        last_other = max((t for t, v in after if v != wanted), default=t0)
        firsts = [t for t, v in after if v == wanted and t > last_other]
        return (firsts[0] - t0) if firsts else None


def bench_driver(driver: str, switches: int, bake: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{driver}-") as tmp:
        dep = Deployment(Path(tmp), driver, bake)
        dep.run("up")
        lua = Path(tmp) / "post.lua"
        lua.write_text(LUA)
        url = f"http://127.0.0.1:{dep.proxy_port}"
        try:
            duration = 40
            wrk = subprocess.Popen(["wrk", "-t2", "-c8", f"-d{duration}s", "-s", str(lua), f"{url}/predict"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1)
            wall = time.perf_counter()
            release = json.loads(dep.run("release", "bluegreen-model:v2", "--json").stdout)
            release_wall = time.perf_counter() - wall
            watcher = VersionWatcher(url)
            watcher.thread.start()
            rollback_times, switch_seconds = [], []
            for i in range(switches):
                wanted = "v1" if i % 2 == 0 else "v2"
                time.sleep(0.3)
                t0 = time.perf_counter()
                args = ["rollback", "--json"] if i % 2 == 0 else ["rollback", "--to", "v2", "--json"]
                doc = json.loads(dep.run(*args).stdout)
                time.sleep(0.5)
                seen = watcher.switch_time(t0, wanted)
                if seen is not None:
                    rollback_times.append(seen)
                switch_seconds.append(float(doc["seconds"]))
            watcher.stop.set()
            watcher.thread.join()
            out, _ = wrk.communicate(timeout=duration + 30)
        finally:
            subprocess.run([*BLUEGREEN, "down"], cwd=dep.root, env=dep.env, capture_output=True)
        stats = parse_wrk(out)
        overhead = release["seconds"] - release["bake_seconds"] - release["start_seconds"]
        return {"driver": driver, "wrk": stats, "release": release, "release_wall": release_wall,
                "overhead": overhead, "rollback_client": rollback_times, "rollback_switch": switch_seconds,
                "watcher_errors": sum(1 for _, v in watcher.samples if v == "error")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drivers", default="haproxy,nginx")
    parser.add_argument("--switches", type=int, default=10)
    parser.add_argument("--bake", default="2s")
    args = parser.parse_args()
    results = [bench_driver(d, args.switches, args.bake) for d in args.drivers.split(",")]
    print("Under load: wrk -t2 -c8 POST /predict through the proxy, during one full release "
          f"(bake {args.bake} x 4 steps) and {args.switches} warm rollbacks (alternating v1/v2)")
    print(f"{'driver':<8} {'requests':>9} {'req/s':>7} {'non-2xx':>8} {'socket errors':>14} {'failed':>7}")
    for r in results:
        w = r["wrk"]
        assert isinstance(w, dict)
        failed = int(w["non_2xx"] + w["socket_errors"])
        print(f"{r['driver']:<8} {int(w['requests']):>9} {w['rps']:>7.0f} {int(w['non_2xx']):>8} "
              f"{int(w['socket_errors']):>14} {failed:>7}")
    print()
    for r in results:
        client = r["rollback_client"]
        switch = r["rollback_switch"]
        assert isinstance(client, list) and isinstance(switch, list)
        print(f"{r['driver']}: rollback, from invoking `bluegreen rollback` to every answer from the previous "
              f"colour: median {statistics.median(client) * 1000:.0f} ms (min {min(client) * 1000:.0f}, "
              f"max {max(client) * 1000:.0f}, n={len(client)}); the switch inside the command: median "
              f"{statistics.median(switch) * 1000:.0f} ms")
        rel = r["release"]
        assert isinstance(rel, dict)
        print(f"{r['driver']}: release {rel['seconds']:.2f}s = bake {rel['bake_seconds']:.2f}s + container start "
              f"{rel['start_seconds']:.2f}s + orchestrator {r['overhead']:.2f}s (backup, gate, 5 quality checks, "
              f"analysis, journal); CLI process wall time {r['release_wall']:.2f}s")


if __name__ == "__main__":
    main()
