"""Benchmark: what HAProxy's per-request timing lines cost the requests it forwards.

HAProxy (the driver's own config, as a host process) in front of a static nginx answer (the
fastest backend there is here, so the proxy's share of each request is as large as it gets),
wrk -c8 for --seconds through it, in three configurations, in the same run and alternating over
--rounds:

- off: no request lines (the config before the proxy timed requests);
- on: each request's line written into HAProxy's ring, nobody reading it;
- on + reader: the same, with the ring dumped and counted every 250 ms, as a release step does.

Prints p50/p99 and throughput per configuration, and for the reader its time per read and the
share of the requests it counted. Asserts nothing.

    python3 bench/proxy_timings.py [--seconds 10] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import WrkResult, wrk  # noqa: E402
from bluegreen.orchestrator import analysis  # noqa: E402
from bluegreen.orchestrator.common.ports import free_ports  # noqa: E402
from bluegreen.orchestrator.proxy import Backend  # noqa: E402
from bluegreen.orchestrator.proxy.haproxy import HAProxy  # noqa: E402

NGINX = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{ default_type application/json; return 200 '{{"ok":true}}'; }}
    }}
}}
"""


class Reader:
    """Reads the proxy's timings every ``interval`` seconds from a thread, timing each read."""

    def __init__(self, proxy: HAProxy, interval: float = 0.25) -> None:
        self.proxy, self.interval = proxy, interval
        self.reads: list[float] = []
        self.first = proxy.latency()["blue"]
        self.last = self.first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            began = time.perf_counter()
            self.last = self.proxy.latency()["blue"]
            self.reads.append(time.perf_counter() - began)

    def stop(self) -> int:
        """Stop reading (after one last read); the requests counted since the first."""
        self._stop.set()
        self._thread.join()
        self.last = self.proxy.latency()["blue"]
        return analysis.observed(self.first, self.last)


def run(mode: str, tmp: Path, backend_port: int, seconds: int) -> dict[str, object]:
    (port,) = free_ports(1)
    directory = tmp / ("haproxy-" + mode.replace(" + ", "-"))  # HAProxy's config takes no spaces in paths
    proxy = HAProxy(directory, "127.0.0.1", port, [Backend("blue", "127.0.0.1", backend_port)], timings=mode != "off")
    proxy.start({"blue": 100})
    try:
        wrk(f"http://127.0.0.1:{port}/", 1, 1, 8)  # warm: HAProxy's connections to the backend
        reader = Reader(proxy) if mode == "on + reader" else None
        result: WrkResult = wrk(f"http://127.0.0.1:{port}/", seconds, 2, 8)
        row: dict[str, object] = {"mode": mode, "requests": result.requests, "rps": round(result.rps),
                                  "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "failed": result.failed}
        if reader is not None:
            counted = reader.stop()
            row.update(reads=len(reader.reads), read_ms_median=round(1000 * statistics.median(reader.reads), 2),
                       read_ms_max=round(1000 * max(reader.reads), 2),
                       counted=counted, counted_share=round(counted / result.requests, 4) if result.requests else 0)
        return row
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-timings-") as name:
        tmp = Path(name)
        (backend_port,) = free_ports(1)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX.format(dir=tmp, port=backend_port))
        subprocess.run(["nginx", "-c", str(conf), "-p", str(tmp)], check=True)
        try:
            for _ in range(args.rounds):
                for mode in ("off", "on", "on + reader"):
                    rows.append(run(mode, tmp, backend_port, args.seconds))
                    if not args.json:
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            pid = int((tmp / "nginx.pid").read_text())
            subprocess.run(["kill", "-QUIT", str(pid)], check=False)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"\n{'mode':<12} {'requests':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6}")
    for r in rows:
        print(f"{r['mode']:<12} {r['requests']:>9,} {r['rps']:>7} {r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} "
              f"{r['failed']:>6}")
    if args.rounds > 1:
        print(f"\nmedian of {args.rounds} rounds")
        for mode in ("off", "on", "on + reader"):
            of = [r for r in rows if r["mode"] == mode]
            p50 = statistics.median(float(str(r["p50_ms"])) for r in of)
            p99 = statistics.median(float(str(r["p99_ms"])) for r in of)
            rps = statistics.median(float(str(r["rps"])) for r in of)
            print(f"{mode:<12} p50 {p50:.3f} ms  p99 {p99:.3f} ms  {rps:,.0f} req/s")
    for r in rows:
        if "reads" in r:
            print(f"reader: {r['reads']} reads, {r['read_ms_median']} ms median ({r['read_ms_max']} ms max), "
                  f"counted {r['counted']:,} of {r['requests']:,} requests ({100 * float(r['counted_share']):.1f} %)")


if __name__ == "__main__":
    main()
