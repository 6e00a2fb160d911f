"""Benchmark: what the team's own checks cost a release, and how soon a hanging one lets go.

- web: a check against a local HTTP server that answers at once (the check's own cost), and one
  against a server that never answers, with a timeout of --timeout seconds (how long past its
  timeout the check ends);
- job: ``true`` in bluegreen-model:v2 (a container created, run, read and removed), and
  ``sleep 600`` with a timeout of --timeout seconds (killed, read and removed: how long past its
  timeout, and how many containers are left);
- approval: from the moment an answer is written to the moment the check returns (its polling).

The checks are called as a release calls them (analysis/checks.py) on the real Docker engine.
Prints figures; asserts nothing.  python3 bench/checks.py [--runs 5] [--timeout 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen.environments.runtime import DockerRuntime  # noqa: E402
from bluegreen.orchestrator.analysis import checks  # noqa: E402
from bluegreen.orchestrator.common.ports import free_ports  # noqa: E402
from bluegreen.orchestrator.settings.model import ApprovalCheck, JobCheck, WebCheck  # noqa: E402

PROJECT = "benchchecks"
IMAGE = "bluegreen-model:v2"


def serve(release: threading.Event) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/hang":
                release.wait(600)
                return
            body = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    (port,) = free_ports(1)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, port


def line(what: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> None:
    values = sorted(v * scale for v in values)
    print(f"{what:<58} {statistics.median(values):>9.1f} {values[-1]:>9.1f} {unit}")


def approval_latency() -> float:
    """Seconds from an answer being there (written by another thread) to the approval check returning."""
    answered: list[float] = []
    threading.Timer(0.2, lambda: answered.append(time.monotonic())).start()
    checks.approval(ApprovalCheck(name="a", kind="approval", timeout=30),
                    lambda: ("approve", "bench") if answered else None)
    return time.monotonic() - answered[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    release = threading.Event()
    httpd, port = serve(release)
    targets = checks.Targets(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", "v2", "v1", 0, "gate")
    engine = DockerRuntime(PROJECT)
    print(f"{'check (' + str(args.runs) + ' runs)':<58} {'median':>9} {'max':>9}")
    try:
        ok = WebCheck(name="w", kind="web", url="{candidate}/ok", pointer="/status", equals="ok")
        line("web, answered at once: the check", [checks.web(ok, targets).seconds for _ in range(args.runs)])
        hang = WebCheck(name="w", kind="web", url="{candidate}/hang", timeout=args.timeout)
        overrun = []
        for _ in range(args.runs):
            began = time.monotonic()
            result = checks.web(hang, targets)
            assert result.timed_out
            overrun.append(time.monotonic() - began - args.timeout)
        line(f"web, never answered: ended past its {args.timeout:g}s timeout by", overrun)
        true = JobCheck(name="j", kind="job", command=["true"])
        line(f"job, `true` in {IMAGE}: create, run, read, remove",
             [checks.job(true, targets, engine, IMAGE).seconds for _ in range(args.runs)])
        sleeper = JobCheck(name="j", kind="job", command=["sleep", "600"], timeout=args.timeout)
        overrun = []
        for _ in range(args.runs):
            began = time.monotonic()
            result = checks.job(sleeper, targets, engine, IMAGE)
            assert result.timed_out
            overrun.append(time.monotonic() - began - args.timeout)
        line(f"job, `sleep 600`: killed and removed past its {args.timeout:g}s timeout by", overrun)
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={PROJECT}"],
                              capture_output=True, text=True, check=True).stdout.split()
        print(f"{'job containers left after every run':<58} {len(left):>9}")
        line("approval: answer written -> check returns", [approval_latency() for _ in range(args.runs)])
    finally:
        release.set()
        httpd.shutdown()
        subprocess.run(["docker", "rm", "-f", *subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={PROJECT}"], capture_output=True,
            text=True).stdout.split()], capture_output=True)


if __name__ == "__main__":
    main()
