"""Benchmark: the reference model server alone — latency, throughput, bursts, and what recording costs.

Starts bluegreen-model containers with host networking on free loopback ports and drives them
with wrk (kept-alive connections) and hey (a new connection per request), bounded in time. Every
figure comes from this run; the machine is noisy, so compare within a run. Prints; asserts nothing.

    python3 bench/model_server.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import free_ports  # noqa: E402
from bench.load import POST_LUA, WrkResult, hey, wrk  # noqa: E402


class Server:
    def __init__(self, image: str, data: Path | None) -> None:
        (self.port,) = free_ports(1)
        self.name = f"bench-model-{uuid.uuid4().hex[:8]}"
        env = ["-e", f"PORT={self.port}", "-e", "HOST=127.0.0.1", "-e", f"MODEL_IMAGE={image}"]
        mounts: list[str] = []
        if data is not None:
            env += ["-e", "DATABASE_URL=sqlite:////data/app.db"]
            mounts = ["-v", f"{data}:/data"]
        subprocess.run(["docker", "run", "-d", "--name", self.name, "--network", "host", *env, *mounts, image],
                       check=True, capture_output=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{image} did not start")

    def metric(self, name: str) -> float:
        import httpx

        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


def burst(port: int, n: int) -> tuple[int, float]:
    """n clients connect at the same instant and GET /health: (answered, slowest seconds)."""
    barrier = threading.Barrier(n)
    times: list[float] = []

    def one() -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
                if sock.makefile("rb").readline().startswith(b"HTTP/1.1 200"):
                    times.append(time.perf_counter() - start)
        except OSError:
            pass

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(times), max(times, default=float("nan"))


def row(name: str, r: WrkResult) -> str:
    return (f"{name:<62} {r.rps:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.2f} "
            f"{r.failed:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    secs = args.seconds
    data = Path(tempfile.mkdtemp(prefix="bench-model-"))
    servers = []
    try:
        v1 = Server("bluegreen-model:v1", data)
        v2 = Server("bluegreen-model:v2", data)
        v1_nodb = Server("bluegreen-model:v1", None)
        servers = [v1, v2, v1_nodb]
        results = []
        for label, s in (("v1 (logistic regression), recorded", v1), ("v2 (random forest), recorded", v2)):
            results.append((f"{label}, 1 kept-alive connection", wrk(f"{s.url}/predict", secs, 1, 1, POST_LUA)))
            results.append((f"{label}, 8 kept-alive connections", wrk(f"{s.url}/predict", secs, 2, 8, POST_LUA)))
            results.append((f"{label}, a new connection each", hey(f"{s.url}/predict", secs, 1, keepalive=False)))
        batches_before, rows_before = v1.metric("prediction_write_batches_total"), v1.metric(
            "prediction_rows_written_total")
        recorded = wrk(f"{v1.url}/predict", secs, 2, 8, POST_LUA)
        batches = v1.metric("prediction_write_batches_total") - batches_before
        rows = v1.metric("prediction_rows_written_total") - rows_before
        unrecorded = wrk(f"{v1_nodb.url}/predict", secs, 2, 8, POST_LUA)
        results.append(("v1, 8 connections, recorded (same run)", recorded))
        results.append(("v1, 8 connections, no database (same run)", unrecorded))

        print(f"Reference model server, POST /predict one row, {secs} s per line (wrk / hey on the same machine)")
        print(f"{'':<62} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'failed':>7}")
        for name, r in results:
            print(row(name, r))
        print()
        print(f"Recording: {rows:.0f} predictions in {batches:.0f} transactions "
              f"({rows / max(batches, 1):.1f} rows per commit); throughput recorded / not recorded = "
              f"{recorded.rps / max(unrecorded.rps, 1):.2f}, p99 {recorded.p99_ms:.2f} vs {unrecorded.p99_ms:.2f} ms")
        print()
        print("Bursts of new connections (all connect at once, GET /health):")
        for n in (16, 64, 256):
            answered, slowest = burst(v1.port, n)
            print(f"  {n:>4} at once: {answered} answered, slowest {slowest * 1000:.0f} ms")
    finally:
        for s in servers:
            s.remove()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
