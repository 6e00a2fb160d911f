"""Benchmark: rollback through the API and from an alert, against the CLI, and drills, under load.

A deployment (v2 live, v1 warm) with `bluegreen serve` running; hey sends --rate requests/s through
the proxy; a watcher polls GET /version through the proxy every 5 ms. Measured, each run from the
moment the request leaves the client to every answer through the proxy coming from the other
version:

- API rollback (POST /api/rollback, alternating directions), --runs of them;
- CLI rollback (`bluegreen rollback`, a new process), the same number, same run;
- alert to rollback: an alert posted to a real Alertmanager, delivered to /api/alerts (group_wait 0s);
- drills (POST /api/drills): their RTO and the requests that failed meanwhile.

Prints; asserts nothing.    python3 bench/serve.py [--rate 1200] [--runs 20] [--alerts 5] [--drills 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import free_ports, write_config  # noqa: E402
from bench.failover import Watcher, finish, load  # noqa: E402
from bench.load import parse_hey  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
TOKEN = "bench-token-0123456789abcdef"


def wait_http(url: str, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def switch_time(watcher: Watcher, t0: float, wanted: str, timeout: float = 10) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        after = [(t, v) for t, v in watcher.samples if t >= t0]
        last_other = max((t for t, v in after if v != wanted), default=t0)
        firsts = [t for t, v in after if v == wanted and t > last_other]
        if firsts and time.monotonic() - firsts[0] > 0.3:  # and it stayed so
            return firsts[0] - t0
        time.sleep(0.05)
    return None


def describe(name: str, samples: list[float]) -> str:
    if not samples:
        return f"{name}: no samples"
    return (f"{name}: median {statistics.median(samples) * 1000:.0f} ms, min {min(samples) * 1000:.0f}, "
            f"max {max(samples) * 1000:.0f} (n={len(samples)})")


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1200.0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--alerts", type=int, default=5)
    parser.add_argument("--drills", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        proxy_port = write_config(root, "bench-serve", bake="0.2s")
        text = (root / "bluegreen.toml").read_text().replace(
            "\nrules = []\n", '\nrules = [{ match = { severity = "critical" }, action = "rollback" }]\n')
        (root / "bluegreen.toml").write_text(text)
        env = {**os.environ, "BLUEGREEN_ACTOR": "bench", "BLUEGREEN_SERVE__TOKEN": TOKEN,
               "BLUEGREEN_SERVE__ROLLBACK_DEDUPE": "0s", "BLUEGREEN_RELEASE__WARM_WINDOW": "1h"}

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*BLUEGREEN, *argv], cwd=root, env=env, capture_output=True, text=True,
                                  check=True)

        cli("up")
        cli("release", "bluegreen-model:v2", "--steps", "100")
        serve_port, am_port = free_ports(2)
        with open(root / "serve.log", "w") as log:
            serve = subprocess.Popen([*BLUEGREEN, "serve", "--port", str(serve_port)], cwd=root, env=env,
                                     stdout=subprocess.DEVNULL, stderr=log)
        api = f"http://127.0.0.1:{serve_port}"
        proxy = f"http://127.0.0.1:{proxy_port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        am = None
        try:
            wait_http(f"{api}/healthz")
            watcher = Watcher(proxy)
            hey = load(proxy, args.rate, 100_000)
            time.sleep(1)
            live = "v2"
            api_times, cli_times = [], []
            with httpx.Client(timeout=30, headers=headers) as client:
                for _ in range(args.runs):
                    wanted = "v1" if live == "v2" else "v2"
                    t0 = time.monotonic()
                    client.post(f"{api}/api/rollback", json={"from": live}).raise_for_status()
                    if (s := switch_time(watcher, t0, wanted)) is not None:
                        api_times.append(s)
                    live = wanted
                for _ in range(args.runs):
                    wanted = "v1" if live == "v2" else "v2"
                    t0 = time.monotonic()
                    cli("rollback", *(["--to", wanted] if wanted == "v2" else []))
                    if (s := switch_time(watcher, t0, wanted)) is not None:
                        cli_times.append(s)
                    live = wanted
                binary = shutil.which("prometheus-alertmanager")
                alert_times: list[float] = []
                if binary and args.alerts:
                    (root / "am.yml").write_text(json.dumps({
                        "route": {"receiver": "b", "group_by": ["alertname"], "group_wait": "0s",
                                  "group_interval": "1s", "repeat_interval": "1h"},
                        "receivers": [{"name": "b", "webhook_configs": [{"url": f"{api}/api/alerts",
                                       "http_config": {"authorization": {"type": "Bearer", "credentials": TOKEN}}}]}]}))
                    am = subprocess.Popen([binary, f"--config.file={root / 'am.yml'}", f"--storage.path={root / 'am'}",
                                           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wait_http(f"http://127.0.0.1:{am_port}/-/ready")
                    for i in range(args.alerts):
                        if live != "v2":
                            client.post(f"{api}/api/rollback", json={"from": live}).raise_for_status()
                            switch_time(watcher, time.monotonic(), "v2")
                            live = "v2"
                        t0 = time.monotonic()
                        httpx.post(f"http://127.0.0.1:{am_port}/api/v2/alerts", timeout=10, json=[{
                            "labels": {"alertname": f"BenchAlert{i}", "severity": "critical"}}]).raise_for_status()
                        if (s := switch_time(watcher, t0, "v1", timeout=30)) is not None:
                            alert_times.append(s)
                        live = "v1"
                drills = []
                for _ in range(args.drills):
                    report = client.post(f"{api}/api/drills").json()
                    drills.append(report)
            result = parse_hey(finish(hey))
            watcher.close()
        except Exception:
            sys.stderr.write((root / "serve.log").read_text()[-4000:])
            raise
        finally:
            if am is not None:
                am.terminate()
                am.wait(timeout=15)
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=15)
            subprocess.run([*BLUEGREEN, "down"], cwd=root, env=env, capture_output=True)
        floor = subprocess.run(["/usr/bin/time", "-f", "%e", sys.executable, "-c", "pass"], capture_output=True,
                               text=True).stderr.strip()
        print(f"Load: hey at {args.rate:.0f} req/s through the proxy: {result.requests} requests, "
              f"{result.failed} failed, {result.rps:.0f} req/s")
        print(describe("API rollback (request sent -> every answer from the other version)", api_times))
        print(describe("CLI rollback (bluegreen rollback started -> every answer from the other version)",
                       cli_times) + f"; interpreter floor {floor} s")
        print(describe("alert posted to Alertmanager -> every answer from the previous version", alert_times))
        for d in drills:
            print(f"drill: {d['kind']} {'passed' if d['ok'] else 'FAILED'}, RTO "
                  f"{(d['rto_s'] or 0) * 1000:.0f} ms, {d['failed_requests']} failed requests, backup "
                  f"{'restored' if d['backup'].get('ok') else 'not restored'}; {'; '.join(d['reasons'])}")


if __name__ == "__main__":
    main()
