"""Benchmark: a colour of two services (the API and a queue consumer, from the compose example)
released and rolled back under a steady job stream, against a colour of one service in the same run.

Two-service colour: `bluegreen up`, then jobs submitted through HAProxy at --rate jobs/s
(POST /jobs, from --threads clients) throughout: a quiet window with no switch, a release of v2
(steps 50, 100), a quiet window, a rollback, a quiet window. Then every job is waited for and the
jobs table read: jobs lost (never done), jobs done more than once or retried (attempts > 1),
failed HTTP requests, and the longest time a job waited in the queue (taken_at - created_at)
among jobs submitted during each switch, against the same figure in the quiet windows.
One-service colour: the same release without compose, timed, for the release's extra time.
Prints; asserts nothing.

    python3 bench/compose.py [--rate 250] [--threads 4] [--quiet 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.failover import BLUEGREEN  # noqa: E402
from bluegreen.orchestrator.common.ports import free_ports  # noqa: E402

COMPOSE = (REPO / "orchestrator" / "data" / "compose.example.yaml").read_text()


class Submitter:
    """``threads`` clients, together at about ``rate`` jobs/s; each job's id and submit time."""

    def __init__(self, url: str, rate: float, threads: int) -> None:
        self.url, self.interval = url, threads / rate
        self.sent: list[tuple[int, float]] = []
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                next_at += self.interval
                try:
                    r = client.post(f"{self.url}/jobs", json={"features": [5.1, 3.5, 1.4, 0.2]})
                    ok = r.status_code == 202
                except httpx.HTTPError:
                    ok = False
                with self.lock:
                    if ok:
                        self.sent.append((r.json()["id"], time.time()))
                    else:
                        self.failed += 1
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def project(root: Path, name: str, compose: bool) -> tuple[dict[str, str], str]:
    proxy, blue, green = free_ports(3)
    text = (REPO / "orchestrator" / "settings" / "default.toml").read_text()
    text = text.replace('project = "bluegreen"', f'project = "{name}"')
    for old, new in (("port = 8080", proxy), ("port = 8101", blue), ("port = 8102", green)):
        text = text.replace(old, f"port = {new}")
    if compose:
        (root / "compose.yaml").write_text(COMPOSE)
        text = (text.replace('compose = ""', 'compose = "compose.yaml"', 1)
                .replace("with = []", 'with = ["prediction-consumer"]', 1)
                .replace('lag_query = ""', "lag_query = \"SELECT count(*) FROM jobs WHERE status = 'queued'\"", 1))
    (root / "bluegreen.toml").write_text(text)
    return {**os.environ, "BLUEGREEN_ACTOR": "bench"}, f"http://127.0.0.1:{proxy}"


def cli(root: Path, env: dict[str, str], *argv: str) -> float:
    began = time.monotonic()
    subprocess.run([*BLUEGREEN, *argv], cwd=root, env=env, capture_output=True, text=True, check=True)
    return time.monotonic() - began


def two_services(rate: float, threads: int, quiet: float, bake: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-compose-") as tmp:
        root = Path(tmp)
        env, url = project(root, f"bench-compose-{os.getpid()}", compose=True)
        try:
            cli(root, env, "up")
            load = Submitter(url, rate, threads)
            windows: list[tuple[str, float, float]] = []

            def window(label: str, action: list[str] | None) -> float:
                began = time.time()
                seconds = cli(root, env, *action) if action else (time.sleep(quiet) or quiet)
                windows.append((label, began, time.time()))
                return seconds

            window("quiet", None)
            release_s = window("release", ["release", "bluegreen-model:v2", "--steps", "50,100", "--bake", bake])
            window("quiet", None)
            rollback_s = window("rollback", ["rollback"])
            window("quiet", None)
            load.close()
            ids = {job_id for job_id, _ in load.sent}
            db = root / "data" / "app.db"
            deadline = time.monotonic() + 120
            rows: dict[int, tuple[str, int, float, float]] = {}
            while time.monotonic() < deadline:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60) as conn:
                    rows = {r[0]: (r[1], r[2], r[3] or 0.0, r[4]) for r in conn.execute(
                        "SELECT id, status, attempts, taken_at, created_at FROM jobs")}
                if all(rows.get(i, ("",))[0] == "done" for i in ids):
                    break
                time.sleep(0.5)
            lost = sum(1 for i in ids if rows.get(i, ("",))[0] != "done")
            twice = sum(1 for i in ids if i in rows and rows[i][1] > 1)
            waits: dict[str, float] = {}
            for label, began, ended in windows:
                inside = [rows[i][2] - rows[i][3] for i in ids if i in rows and began <= rows[i][3] <= ended
                          and rows[i][0] == "done"]
                if inside:
                    waits[label] = max(waits.get(label, 0.0), max(inside))
            duration = windows[-1][2] - windows[0][1]
            return {"submitted": len(ids), "failed_http": load.failed, "lost": lost, "done_twice": twice,
                    "rate": len(ids) / duration, "release_s": release_s, "rollback_s": rollback_s, "waits": waits}
        finally:
            subprocess.run([*BLUEGREEN, "down"], cwd=root, env=env, capture_output=True)


def one_service(bake: str) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-single-") as tmp:
        root = Path(tmp)
        env, _url = project(root, f"bench-single-{os.getpid()}", compose=False)
        try:
            cli(root, env, "up")
            return cli(root, env, "release", "bluegreen-model:v2", "--steps", "50,100", "--bake", bake)
        finally:
            subprocess.run([*BLUEGREEN, "down"], cwd=root, env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--quiet", type=float, default=8.0)
    parser.add_argument("--bake", default="3s")
    args = parser.parse_args()
    two = two_services(args.rate, args.threads, args.quiet, args.bake)
    single = one_service(args.bake)
    print(json.dumps({"two_services": two, "one_service_release_s": single}, indent=2, default=str))
    waits = two["waits"]
    assert isinstance(waits, dict)
    print(f"jobs: {two['submitted']} submitted at {two['rate']:.0f}/s through HAProxy; lost {two['lost']}, done "
          f"more than once or retried {two['done_twice']}, failed HTTP requests {two['failed_http']}")
    print(f"longest wait in the queue: quiet {waits.get('quiet', 0):.2f} s, during the release "
          f"{waits.get('release', 0):.2f} s, during the rollback {waits.get('rollback', 0):.2f} s")
    print(f"release (steps 50,100, bake {args.bake}): two services {two['release_s']:.1f} s, one service "
          f"{single:.1f} s (+{float(two['release_s']) - single:.1f} s); rollback with its workers "  # type: ignore[arg-type]
          f"{two['rollback_s']:.1f} s")


if __name__ == "__main__":
    main()
