"""Benchmark: rendering GET /metrics for N deployments, each with a long history.

Each deployment has its own state directory with --rows journal rows (backups, drills with their
RTO, releases, rollbacks), --alerts alert deliveries in the audit log, --sets verified backup sets,
and its proxy running (HAProxy under --supervisor); the first --archives of them replicate their
SQLite database with Litestream. Then render() of all of them is timed --runs times, in this
process, as serve does for a scrape. With --code DIR, the checkout in DIR renders instead (a
collector of one deployment is called once per deployment).

Prints; asserts nothing.
    python3 bench/metrics.py [--deployments 20] [--rows 2000] [--runs 30] [--supervisor container] [--archives 0]
                             [--code DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import write_config  # noqa: E402


def history(dep: object, rows: int, alerts: int) -> None:
    """A year of a busy deployment, written in one transaction: mostly scheduled backups and drills."""
    from bluegreen.orchestrator.state.store import now

    state = dep.state  # type: ignore[attr-defined]
    state.record_environment("blue", "bluegreen-model:v1", "v1", "c1", 1)
    state.record_environment("green", "bluegreen-model:v2", "v2", "c2", 2)
    state.set_live("green", {"green": 100, "blue": 0})
    stamp = now()
    with state.transaction() as conn:
        for i in range(rows):
            kind, status, duration = [("backup", "passed", 3.0), ("drill", "passed", 4.0),
                                      ("release", "promoted", 60.0), ("rollback", "switched", 0.05)][
                0 if i % 20 < 12 else 1 if i % 20 < 17 else 2 if i % 20 < 19 else 3]
            version = "v2" if i % 2 else "v1"
            cur = conn.execute(
                "INSERT INTO releases (kind, started_at, finished_at, actor, image, version, env, from_color,"
                " to_color, from_image, from_version, plan, status, duration_s) VALUES (?, ?, ?, 'bench', ?, ?,"
                " '{}', 'blue', 'green', 'bluegreen-model:v1', 'v1', '{}', ?, ?)",
                (kind, stamp, stamp, f"bluegreen-model:{version}", version, status, duration))
            conn.execute("INSERT INTO release_steps (release_id, seq, name, started_at, finished_at, outcome, detail)"
                         " VALUES (?, 0, 'warm', ?, ?, 'done', ?)",
                         (cur.lastrowid, stamp, stamp, json.dumps({"rto_s": 0.004, "kind": "warm"})))
        for i in range(alerts):
            conn.execute("INSERT INTO audit (started_at, actor, action, args, outcome) VALUES (?, 'alertmanager',"
                         " 'alert', ?, 'ok')", (stamp, json.dumps({"action": "rollback" if i % 3 else "record"})))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--rows", type=int, default=2000, help="journal rows per deployment")
    parser.add_argument("--alerts", type=int, default=500, help="alert deliveries per deployment")
    parser.add_argument("--sets", type=int, default=3, help="verified backup sets per deployment")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--supervisor", choices=("container", "process"), default="container")
    parser.add_argument("--archives", type=int, default=0, help="deployments that replicate with Litestream")
    parser.add_argument("--code", type=Path, help="render with the checkout in this directory")
    args = parser.parse_args()
    if args.code is not None:
        sys.path.insert(0, str(args.code.resolve()))

    from bluegreen.orchestrator.api import metrics
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.settings.model import load_settings

    deps = []
    with tempfile.TemporaryDirectory(prefix="bluegreen-metrics-") as tmp:
        try:
            for i in range(args.deployments):
                root = Path(tmp) / f"d{i}"
                root.mkdir()
                write_config(root, f"m{uuid.uuid4().hex[:8]}")
                config = root / "bluegreen.toml"
                text = config.read_text().replace('supervisor = "container"', f'supervisor = "{args.supervisor}"')
                if i < args.archives:
                    text = text.replace('pitr = "off"', 'pitr = "litestream"')
                config.write_text(text)
                (root / "data").mkdir()
                with sqlite3.connect(root / "data" / "app.db") as db:
                    db.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY, x TEXT)")
                    db.executemany("INSERT INTO predictions (x) VALUES (?)", [("row",)] * 1000)
                dep = Deployment(load_settings(config), actor="bench").warm()
                deps.append(dep)
                dep.proxy.start({"blue": 0, "green": 100})
                history(dep, args.rows, args.alerts)
                for _ in range(args.sets):
                    made = dep.backups.create(reason="bench")
                    dep.backups.verify(made.id)
                if dep.pitr is not None:
                    dep.pitr.start()
            def render(some: list[Deployment]) -> bytes:
                if "deps" in inspect.signature(metrics.render).parameters:
                    return metrics.render(some)  # type: ignore[arg-type]
                return b"".join(metrics.render(dep) for dep in some)  # type: ignore[arg-type]

            print(f"code: {Path(metrics.__file__).resolve().parents[2]}")
            render(deps)  # the first scrape builds the adapters serve keeps
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                text = render(deps)
                times.append((time.perf_counter() - began) * 1000)
            one = []
            for _ in range(args.runs):
                began = time.perf_counter()
                render(deps[:1])
                one.append((time.perf_counter() - began) * 1000)
            times.sort()
            print(f"deployments {args.deployments}, journal rows {args.rows} and alerts {args.alerts} each, "
                  f"{args.sets} verified sets each, proxy supervisor {args.supervisor}, "
                  f"{args.archives} with Litestream")
            samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
            print(f"exposition: {len(text):,} bytes, {samples:,} samples")
            print(f"render all: median {statistics.median(times):.1f} ms, p95 {times[int(len(times) * 0.95) - 1]:.1f} "
                  f"ms, max {times[-1]:.1f} ms (n={args.runs})")
            print(f"render one: median {statistics.median(one):.1f} ms (the first deployment alone)")
        finally:
            for dep in deps:
                if dep.pitr is not None:
                    dep.pitr.stop()
                with contextlib.suppress(Exception):
                    dep.proxy.stop()
                if args.supervisor == "container":
                    subprocess.run(["docker", "rm", "-f", f"{dep.settings.project}-proxy"], capture_output=True)


if __name__ == "__main__":
    main()
