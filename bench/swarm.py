"""Benchmark: release and rollback under load with 3 replicas per colour on Docker Swarm, against
the single-container runtime in the same run.

For each runtime: `bluegreen up`, then under hey at --rate requests/s through HAProxy: a release
of v2 (steps 50, 100; --bake) and --rollbacks warm rollbacks (alternating), each timed from the
start of `bluegreen rollback` to the first answer through the proxy from the other version.
Needs a swarm manager (`docker swarm init --advertise-addr 127.0.0.1`; made and left here when the
engine is not in one). Prints; asserts nothing.

    python3 bench/swarm.py [--rate 800] [--rollbacks 5] [--bake 3s]
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

from bench.failover import BLUEGREEN, Watcher, finish, load  # noqa: E402
from bench.load import parse_hey  # noqa: E402
from bluegreen.orchestrator.common.ports import free_port_run  # noqa: E402

REPLICAS = 3


def run_one(kind: str, rate: float, rollbacks: int, bake: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        root = Path(tmp)
        first = free_port_run(2 * REPLICAS + 1)
        proxy, blue, green = first, first + 1, first + 1 + REPLICAS
        text = (REPO / "orchestrator" / "settings" / "default.toml").read_text()
        text = text.replace('project = "bluegreen"', f'project = "bench-{kind}-{os.getpid()}"')
        for old, new in (("port = 8080", proxy), ("port = 8101", blue), ("port = 8102", green)):
            text = text.replace(old, f"port = {new}")
        (root / "bluegreen.toml").write_text(text)
        env = {**os.environ, "BLUEGREEN_ACTOR": "bench"}
        if kind == "swarm":
            env.update({"BLUEGREEN_RUNTIME__KIND": "swarm", "BLUEGREEN_RUNTIME__REPLICAS": str(REPLICAS),
                        "BLUEGREEN_RUNTIME__PORT_STEP": "1"})

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*BLUEGREEN, *argv], cwd=root, env=env, capture_output=True, text=True, check=True)

        url = f"http://127.0.0.1:{proxy}"
        try:
            began = time.monotonic()
            cli("up")
            up_s = time.monotonic() - began
            watcher = Watcher(url)
            hey = load(url, rate, 600)
            time.sleep(1)
            began = time.monotonic()
            release = json.loads(cli("release", "bluegreen-model:v2", "--steps", "50,100", "--bake", bake,
                                     "--json").stdout)
            release_s = time.monotonic() - began
            times = []
            live = "v2"
            for _ in range(rollbacks):
                wanted = "v1" if live == "v2" else "v2"
                t0 = time.monotonic()
                cli("rollback", *(["--to", wanted] if wanted == "v2" else []))
                deadline = time.monotonic() + 10
                while watcher.first(t0, wanted) is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                got = watcher.first(t0, wanted)
                if got is not None:
                    times.append(got)
                live = wanted
            result = parse_hey(finish(hey))
            watcher.close()
        finally:
            subprocess.run([*BLUEGREEN, "down"], cwd=root, env=env, capture_output=True)
            for color in ("blue", "green"):
                subprocess.run(["docker", "service", "rm", f"bench-{kind}-{os.getpid()}-{color}"], capture_output=True)
        return {"kind": kind, "up_s": up_s, "release_s": release_s, "bake_s": release["bake_seconds"],
                "start_s": release["start_seconds"], "rollbacks": times, "requests": result.requests,
                "failed": result.failed, "rps": result.rps}


def main() -> None:
    import docker

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--rollbacks", type=int, default=5)
    parser.add_argument("--bake", default="3s")
    args = parser.parse_args()
    client = docker.from_env()
    made = client.info().get("Swarm", {}).get("LocalNodeState") != "active"
    if made:
        subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], check=True, capture_output=True)
    try:
        rows = [run_one(kind, args.rate, args.rollbacks, args.bake) for kind in ("docker", "swarm")]
    finally:
        if made:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True)
    print(f"hey at {args.rate:.0f} req/s through HAProxy; release of v2 with steps 50, 100 and {args.bake} bakes; "
          f"{args.rollbacks} warm rollbacks")
    for r in rows:
        rb = r["rollbacks"]
        assert isinstance(rb, list)
        rb_text = (f"median {statistics.median(rb) * 1000:.0f} ms (min {min(rb) * 1000:.0f}, max "
                   f"{max(rb) * 1000:.0f}, n={len(rb)})") if rb else "no samples"
        print(f"{r['kind']:>6} ({REPLICAS if r['kind'] == 'swarm' else 1} per colour): up {r['up_s']:.1f} s; "
              f"release {r['release_s']:.1f} s (start {r['start_s']:.1f} s, baking {r['bake_s']:.1f} s); "
              f"rollback {rb_text}; {r['requests']} requests, {r['failed']} failed, {r['rps']:.0f} req/s")
    d, s = rows
    print(f"release overhead of swarm over docker: {float(s['release_s']) - float(d['release_s']):+.1f} s "  # type: ignore[arg-type]
          f"(start {float(s['start_s']) - float(d['start_s']):+.1f} s)")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
