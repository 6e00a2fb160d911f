"""Benchmark: a fleet of N deployments on this host behind one proxy and one `bluegreen fleet serve`.

For each N (default 1, 5, 20; the reference image, one container per colour, routes /d0 … /dN-1):
every deployment released to v2 (v1 warm), the fleet's serve started, then under a rate-limited
load spread over all deployments (one hey per deployment, --rate requests/s in all):

- API rollback of one deployment (POST /api/deployments/d0/rollback, alternating), --runs of them:
  the request's latency; failed requests on it and on every other deployment meanwhile;
- one Alertmanager group firing for every deployment at once (one delivery of N alerts, straight to
  /api/alerts as Alertmanager posts it): the time until the last deployment serves v1 again;
- serve's and the proxy's RSS;
- a deployment added (fleet add + up) under the load: failed requests anywhere;
- `bluegreen fleet status` (a new process), median of 5;
- the proxy's added latency: wrk -c4 through the proxy to one deployment, 8 s, at each N.

Prints; asserts nothing.    python3 bench/fleet.py [--sizes 1,5,20] [--rate 400] [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import free_ports  # noqa: E402
from bench.load import POST_LUA, hey_command, parse_hey, wrk  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
TOKEN = "bench-fleet-token-0123456789abcdef"


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def haproxy_pids(conf_dir: Path) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if (cmd.startswith(b"haproxy") or b"/haproxy\0" in cmd) and str(conf_dir).encode() in cmd:
                out.append(int(proc.name))
    return out


class Fleet:
    def __init__(self, root: Path, n: int) -> None:
        self.root, self.n = root, n
        self.path = root / "fleet.toml"
        ports = free_ports(3 + 2 * (n + 1))
        self.proxy_port, self.serve_port = ports[0], ports[1]
        self.colour_ports = ports[3:]
        self.names = [f"d{i}-{os.getpid()}" for i in range(n + 1)]  # the last one joins under load
        self.env = {**os.environ, "BLUEGREEN_FLEET": str(self.path), "BLUEGREEN_ACTOR": "bench",
                    "BLUEGREEN_FLEET_TOKEN": TOKEN}

    def run(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run([*BLUEGREEN, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"bluegreen {' '.join(args)}: {proc.stderr[-600:]}")
        return proc.stdout

    def write(self, i: int) -> Path:
        from bluegreen.orchestrator.settings.core import default_toml

        d = self.root / f"d{i}"
        d.mkdir()
        text = default_toml()
        for old, new in (('project = "bluegreen"', f'project = "{self.names[i]}"'),
                         ("port = 8101", f"port = {self.colour_ports[2 * i]}"),
                         ("port = 8102", f"port = {self.colour_ports[2 * i + 1]}"),
                         ("\nrules = []\n", '\nrules = [{ match = { severity = "critical" }, action = "rollback" }]\n'),
                         ('watch = "5s"', 'watch = "2s"'), ("supervisor = \"container\"", "supervisor = \"process\"")):
            text = text.replace(old, new, 1)
        (d / "bluegreen.toml").write_text(text)
        return d

    def build(self) -> None:
        self.run("fleet", "init", str(self.path))
        text = self.path.read_text().replace("port = 8080", f"port = {self.proxy_port}").replace(
            "port = 9900", f"port = {self.serve_port}").replace('supervisor = "container"', 'supervisor = "process"')
        self.path.write_text(text)
        for i in range(self.n):
            self.run("fleet", "add", str(self.write(i)), "--prefix", f"/d{i}")
        self.run("fleet", "up", timeout=120 + 30 * self.n)
        for name in self.names[: self.n]:
            self.run("-d", name, "release", "bluegreen-model:v2", "--steps", "100", "--bake", "0.1s")

    def teardown(self) -> None:
        try:
            self.run("fleet", "down", timeout=120 + 20 * self.n)
        finally:
            for name in self.names:
                ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={name}"],
                                     capture_output=True, text=True).stdout.split()
                if ids:
                    subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def versions(base: str, n: int) -> dict[int, str]:
    import httpx

    out = {}
    with httpx.Client(timeout=5) as c:
        for i in range(n):
            try:
                out[i] = str(c.get(f"{base}/d{i}/version").json().get("version"))
            except (httpx.HTTPError, ValueError):
                out[i] = "?"
    return out


def measure(n: int, rate: float, runs: int) -> dict[str, object]:
    import httpx

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        fleet = Fleet(Path(tmp), n)
        try:
            fleet.build()
            log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115
            serve = subprocess.Popen([*BLUEGREEN, "fleet", "serve"], cwd=tmp, env=fleet.env, stdout=log,
                                     stderr=subprocess.STDOUT)
            api = f"http://127.0.0.1:{fleet.serve_port}"
            base = f"http://127.0.0.1:{fleet.proxy_port}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            quiet = wrk(f"{base}/d0/predict", 8, 2, 4, POST_LUA)
            seconds = 30 + 2 * runs + 4 * n
            loads = [subprocess.Popen(hey_command(f"{base}/d{i}/predict", seconds, 1, rate / n),
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(n)]
            time.sleep(2)
            rollbacks = []
            with httpx.Client(timeout=60, headers=headers) as c:
                for _ in range(runs):
                    body = {"reason": "bench", "from": versions(base, 1)[0]}  # asked before the clock starts
                    began = time.perf_counter()
                    r = c.post(f"{api}/api/deployments/{fleet.names[0]}/rollback", json=body)
                    rollbacks.append(time.perf_counter() - began)
                    r.raise_for_status()
                    time.sleep(0.2)
                # every deployment on v2 again, then one delivery naming them all
                for name in fleet.names[:n]:
                    st = c.get(f"{api}/api/deployments/{name}/status").json()
                    if st["environments"][st["live"]]["version"] != "v2":
                        c.post(f"{api}/api/deployments/{name}/rollback", json={"to": "v2"}).raise_for_status()
                payload = {"version": "4", "groupKey": "bench", "status": "firing", "receiver": "fleet", "alerts": [
                    {"status": "firing", "labels": {"alertname": "ModelErrors", "severity": "critical",
                                                   "deployment": name},
                     "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ"), "fingerprint": f"fp-{name}-{time.time()}"}
                    for name in fleet.names[:n]]}
                began = time.perf_counter()
                delivered = c.post(f"{api}/api/alerts", json=payload)
                answered = time.perf_counter() - began
                delivered.raise_for_status()
                while any(v != "v1" for v in versions(base, n).values()) and time.perf_counter() - began < 30:
                    time.sleep(0.02)
                all_back = time.perf_counter() - began
            serve_rss = rss_mb([serve.pid])
            proxy_rss = rss_mb(haproxy_pids(Path(tmp) / ".bluegreen-fleet" / "conf.d"))
            fleet.run("fleet", "add", str(fleet.write(n)), "--prefix", f"/d{n}")
            fleet.run("-d", fleet.names[n], "up")
            results = [parse_hey(p.communicate(timeout=seconds + 60)[0]) for p in loads]
            for i, r in enumerate(results):
                if r.failed:  # what hey saw: its error distribution and status codes
                    said = [line for line in r.raw.splitlines() if line.strip().startswith("[")]
                    print(f"N={n}: d{i} lost {r.failed}: {said}", file=sys.stderr)
            status_times = []
            for _ in range(5):
                began = time.perf_counter()
                fleet.run("fleet", "status", "--json")
                status_times.append(time.perf_counter() - began)
            serve.terminate()
            serve.wait(timeout=30)
            log.close()
        finally:
            fleet.teardown()
    return {"n": n, "rollback_median_ms": statistics.median(rollbacks) * 1000,
            "rollback_max_ms": max(rollbacks) * 1000, "alert_answered_ms": answered * 1000,
            "alert_all_back_ms": all_back * 1000, "failed": sum(r.failed for r in results),
            "failed_on_d0": results[0].failed, "requests": sum(r.requests for r in results),
            "achieved_rps": sum(r.rps for r in results), "serve_rss_mb": serve_rss, "proxy_rss_mb": proxy_rss,
            "fleet_status_median_s": statistics.median(status_times), "quiet_p50_ms": quiet.p50_ms,
            "quiet_p99_ms": quiet.p99_ms, "quiet_rps": quiet.rps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,5,20")
    parser.add_argument("--rate", type=float, default=400.0, help="requests/s over all deployments")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rows = [measure(int(n), args.rate, args.runs) for n in args.sizes.split(",")]
    print(json.dumps(rows, indent=2))
    print(f"\n{'N':>3} {'rollback med/max ms':>20} {'alert: answered/all back ms':>28} {'failed/requests':>16} "
          f"{'serve MB':>9} {'proxy MB':>9} {'status s':>9} {'wrk p50/p99 ms':>15}")
    for r in rows:
        print(f"{r['n']:>3} {r['rollback_median_ms']:>9.0f}/{r['rollback_max_ms']:<10.0f} "
              f"{r['alert_answered_ms']:>13.0f}/{r['alert_all_back_ms']:<14.0f} "
              f"{r['failed']:>6}/{r['requests']:<9} {r['serve_rss_mb']:>9.0f} {r['proxy_rss_mb']:>9.1f} "
              f"{r['fleet_status_median_s']:>9.2f} {r['quiet_p50_ms']:>7.2f}/{r['quiet_p99_ms']:<7.2f}")


if __name__ == "__main__":
    main()
