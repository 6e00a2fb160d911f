"""Benchmark: cold rollbacks under load, the code before the fix against the code after, same run.

A cold rollback starts the target version in the idle colour, gates it, then moves all traffic
to it. Two ways to get there, ``--trials`` times each, for each version of the code:

- **after retire**: v2 live on green, v1 warm on blue; ``bluegreen retire`` stops blue; then
  ``bluegreen rollback`` (v1 started in blue, gated, switched). ``release v2`` sets up the next.
- **after a kill**: the live colour is killed with ``docker kill``; the proxy fails over to the
  warm standby and HAProxy marks the killed colour down; ``bluegreen recover`` makes it
  official; then ``bluegreen rollback --to`` the killed colour's version.

Only the rollback runs under load: wrk, 8 kept-alive connections as fast as they go (POST
/predict through the proxy), from 1.5 s before the command until 1.5 s after it returns. Every
non-2xx answer and socket error is a failed request; the bar is zero.

"Before" is the code of ``--before`` (a git revision, extracted with ``git archive``; by default
the commit before traffic waited for the proxy's own check); "after" is this checkout, or the
code of ``--after`` (so that edits during a long run change nothing). Each gets its own
deployment on free loopback ports, with the default settings (proxy check every 1,000 ms).
Prints figures; asserts nothing.

    python3 bench/cold_rollback.py [--trials 10] [--before REV] [--after REV] [--only before|after]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import write_config  # noqa: E402
from bench.load import POST_LUA, parse_wrk  # noqa: E402

BLUEGREEN = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
V2 = "bluegreen-model:v2"
FIX = "orchestrator/switch.py"  # added by the fix: the commit before it is the code before


@dataclass
class Trial:
    kind: str  # "retire" or "kill"
    failed: int
    requests: int
    rps: float
    seconds: float  # the rollback command, start to exit


class Deployment:
    def __init__(self, root: Path, code: Path, project: str) -> None:
        self.root = root
        self.project = project
        self.port = write_config(root, project, "haproxy", "0.2s")
        self.url = f"http://127.0.0.1:{self.port}/predict"
        self.env = {**os.environ, "BLUEGREEN_ACTOR": "bench", "PYTHONPATH": str(code)}
        self.lua = root / "post.lua"
        self.lua.write_text(POST_LUA)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*BLUEGREEN, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=300)
        if check and proc.returncode != 0:
            raise SystemExit(f"bluegreen {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
        return proc

    def status(self) -> dict[str, Any]:
        return json.loads(self.run("status", "--json").stdout)  # type: ignore[no-any-return]

    def green_live_blue_warm(self) -> None:
        s = self.status()
        if s["live"] == "green" and s.get("standby") == "blue":
            return
        self.run("release", V2, "--steps", "100")

    def under_load(self, *args: str) -> tuple[int, int, float, float]:
        """Run ``bluegreen *args`` under wrk: (failed, requests, req/s, seconds of the command)."""
        wrk = subprocess.Popen(["wrk", "-t2", "-c8", "-d120s", "-s", str(self.lua), self.url],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.5)
        began = time.monotonic()
        self.run(*args)
        seconds = time.monotonic() - began
        time.sleep(1.5)
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its report
        result = parse_wrk(wrk.communicate(timeout=60)[0])
        return result.failed, result.requests, result.rps, seconds

    def after_retire(self) -> Trial:
        self.green_live_blue_warm()
        self.run("retire")
        return Trial("retire", *self.under_load("rollback"))

    def after_kill(self) -> Trial:
        s = self.status()
        live, version = s["live"], s["environments"][s["live"]]["version"]
        if not s.get("standby"):
            self.green_live_blue_warm()
            s = self.status()
            live, version = s["live"], s["environments"][s["live"]]["version"]
        subprocess.run(["docker", "kill", f"{self.project}-{live}"], check=True, capture_output=True)
        deadline = time.monotonic() + 30  # the proxy's checks take the killed colour down
        while time.monotonic() < deadline and self.proxy_status(live) != "DOWN":
            time.sleep(0.1)
        self.run("recover")  # the failover made official: the standby is live
        return Trial("kill", *self.under_load("rollback", "--to", version))

    def proxy_status(self, color: str) -> str:
        """The colour's server status in HAProxy's own ``show stat`` (UP, DOWN, …)."""
        from bluegreen.orchestrator.proxy.instances import socket_path

        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(socket_path(self.root / ".bluegreen" / "haproxy")))
            sock.sendall(b"show stat\n")
            text = b""
            while chunk := sock.recv(65536):
                text += chunk
        lines = text.decode().splitlines()
        header = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "models" and row.get("svname") == color:
                return row.get("status", "")
        return ""


def extract(rev: str, into: Path) -> Path:
    """The tree of ``rev`` in ``into`` (git archive: no worktree is registered)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def before_fix() -> str:
    added = subprocess.run(["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "--", FIX],
                           capture_output=True, text=True, check=True).stdout.split()
    if not added:
        raise SystemExit(f"{FIX} is not committed yet: give --before REV")
    return added[-1] + "^"


def bench(label: str, code: Path, trials: int, scratch: Path) -> list[Trial]:
    root = scratch / label
    root.mkdir()
    dep = Deployment(root, code, f"bench-cold-{label}")
    out: list[Trial] = []
    dep.run("up")
    try:
        for i in range(trials):
            out.append(dep.after_retire())
            print(f"  {label}: after retire {i + 1}: {out[-1].failed} failed of {out[-1].requests:,}", flush=True)
        for i in range(trials):
            out.append(dep.after_kill())
            print(f"  {label}: after a kill {i + 1}: {out[-1].failed} failed of {out[-1].requests:,}", flush=True)
    finally:
        dep.run("down", check=False)
    return out


def report(results: dict[str, list[Trial]], revs: dict[str, str]) -> None:
    print()
    print("Cold rollbacks under wrk -c8 through HAProxy (failed = non-2xx + socket errors, 1.5 s before the "
          "command to 1.5 s after it)")
    print(f"{'code':<8} {'path':<14} {'n':>3} {'with failures':>13} {'failed, each':<40} {'requests':>9} "
          f"{'req/s':>6} {'command s (median)':>18}")
    for label, trials in results.items():
        for kind, name in (("retire", "after retire"), ("kill", "after a kill")):
            ts = [t for t in trials if t.kind == kind]
            if not ts:
                continue
            each = ", ".join(str(t.failed) for t in ts)
            print(f"{label:<8} {name:<14} {len(ts):>3} {sum(t.failed > 0 for t in ts):>13} {each:<40} "
                  f"{sum(t.requests for t in ts):>9,} {statistics.median(t.rps for t in ts):>6.0f} "
                  f"{statistics.median(t.seconds for t in ts):>18.2f}")
    for label, rev in revs.items():
        print(f"{label}: {rev}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10, help="cold rollbacks of each kind, per version of the code")
    parser.add_argument("--before", default=None, help="git revision of the code before (default: before the fix)")
    parser.add_argument("--after", default=None, help="git revision of the code after (default: this checkout)")
    parser.add_argument("--only", choices=("before", "after"), default=None)
    args = parser.parse_args()
    results: dict[str, list[Trial]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        scratch = Path(tmp)
        revs = {"after": f"{args.after} ({_short(args.after)})" if args.after else
                f"this checkout ({_git('describe', '--always', '--dirty')})"}
        if args.only != "after":
            rev = args.before or before_fix()
            revs = {"before": f"{rev} ({_short(rev)})", **revs}
            code = extract(rev, _mkdir(scratch / "before-code"))
            results["before"] = bench("before", code, args.trials, scratch)
        if args.only != "before":
            code = extract(args.after, _mkdir(scratch / "after-code")) if args.after else REPO
            results["after"] = bench("after", code, args.trials, scratch)
        if args.only:
            revs = {k: v for k, v in revs.items() if k == args.only}
    report(results, revs)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def _short(rev: str) -> str:
    return _git("rev-parse", "--short", rev)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


if __name__ == "__main__":
    main()
