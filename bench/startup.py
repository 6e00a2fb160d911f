"""Benchmark: CLI cold start and the reference image's container start-to-healthy time.

Prints figures; asserts nothing. Run after scripts/provision.sh:  python3 bench/startup.py [--runs N]
Ratios are measured in the same run, because these machines are noisy.

``--against DIR`` compares this checkout with another one (``git worktree add DIR COMMIT``, then
``python3 -m compileall -q DIR``) in the same run: ``status --json`` and a warm ``rollback`` as new
processes, in alternating blocks (each block's first run is discarded: it refills the settings cache,
which each code keys by its own files).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import write_config  # noqa: E402
from bluegreen.orchestrator.core.environment import ensure_environment  # noqa: E402
from bluegreen.orchestrator.deployment import Deployment  # noqa: E402
from bluegreen.orchestrator.settings.model import load_settings  # noqa: E402


def timed(argv: list[str], cwd: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, capture_output=True)
        out.append(time.perf_counter() - start)
    return out


def describe(name: str, samples: list[float]) -> str:
    return (f"{name:<38} median {statistics.median(samples) * 1000:7.0f} ms   "
            f"min {min(samples) * 1000:6.0f} ms   max {max(samples) * 1000:6.0f} ms   (n={len(samples)})")


def compare(other: Path, runs: int, blocks: int = 4) -> None:
    """Cold start of status and a warm rollback, this code against ``other``'s, in alternating blocks."""
    bluegreen = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
    codes = {"this checkout": str(REPO), str(other): str(other)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_config(root, "bench-compare", bake="0.1s")
        env = {**os.environ, "BLUEGREEN_ACTOR": "bench", "PYTHONPATH": str(REPO)}
        subprocess.run([*bluegreen, "up"], cwd=root, check=True, capture_output=True, env=env)
        subprocess.run([*bluegreen, "release", "bluegreen-model:v2", "--steps", "100"], cwd=root, check=True,
                       capture_output=True, env=env)
        samples: dict[str, dict[str, list[float]]] = {name: {"status": [], "rollback": []} for name in codes}
        try:
            for _ in range(blocks):
                for name, path in codes.items():
                    code_env = {**env, "PYTHONPATH": path}
                    for what, argv in (("status", [*bluegreen, "status", "--json"]),
                                       ("rollback", [*bluegreen, "rollback", "--json"])):
                        subprocess.run(argv, cwd=root, check=True, capture_output=True, env=code_env)  # warm-up
                        for _ in range(runs):
                            start = time.perf_counter()
                            subprocess.run(argv, cwd=root, check=True, capture_output=True, env=code_env)
                            samples[name][what].append(time.perf_counter() - start)
            print(f"cold start, {blocks} alternating blocks of {runs} runs (a new process each run)")
            for what in ("status", "rollback"):
                for name in codes:
                    print(describe(f"{what} ({name})"[:38], samples[name][what]))
        finally:
            subprocess.run([*bluegreen, "down"], cwd=root, capture_output=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--against", type=Path, help="another checkout to compare status and rollback with")
    args = parser.parse_args()
    if args.against is not None:
        compare(args.against.resolve(), args.runs)
        return
    bluegreen = [sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_config(root, "bench-startup")
        env = {**os.environ, "BLUEGREEN_ACTOR": "bench"}
        subprocess.run([*bluegreen, "up"], cwd=root, check=True, capture_output=True, env=env)
        try:
            floor = timed([sys.executable, "-c", "pass"], root, args.runs)
            helps = timed([*bluegreen, "--help"], root, args.runs)
            status = timed([*bluegreen, "status", "--json"], root, args.runs)
            print("CLI cold start (a new process each run, deployment up: docker + HAProxy + health probes)")
            print(describe("python3 -c pass (interpreter floor)", floor))
            print(describe("bluegreen --help", helps))
            print(describe("bluegreen status --json", status))
            own = statistics.median(status) - statistics.median(floor)
            print(f"{'status minus the interpreter floor':<38} median {own * 1000:7.0f} ms")

            dep = Deployment(load_settings(root / "bluegreen.toml"), actor="bench")
            healthy = []
            for _ in range(max(3, args.runs // 2)):
                dep.runtime.remove("green")
                start = time.perf_counter()
                ensure_environment(dep, "green", dep.settings.image_ref("v2"), "v2")
                healthy.append(time.perf_counter() - start)
            dep.runtime.remove("green")
            print()
            print("Container start to healthy (docker run of bluegreen-model:v2 until GET /health answers 200)")
            print(describe("start-to-healthy", healthy))
        finally:
            subprocess.run([*bluegreen, "down"], cwd=root, capture_output=True, env=env)


if __name__ == "__main__":
    main()
