"""Benchmark: `bluegreen serve`'s memory while a client uploads a huge body, with and without a token.

For each case a fresh `bluegreen serve` (nothing deployed: what is measured happens before any
action) is sent --size bytes, made while they are sent, and its resident memory (VmRSS from
/proc/PID/status) is read every 5 ms: before the upload, its peak during it, and after the answer
(at once, and --settle seconds later). Printed per case: the answer, how much of the body the client
got to send before it, how long it took, and the three RSS figures.

`--code DIR` runs serve from another checkout (e.g. the commit before the body limit, extracted with
`git archive COMMIT | tar -x -C DIR`); the client and this script stay the same.

Prints; asserts nothing.    python3 bench/serve_body.py [--size 200MB] [--code DIR] [--settle 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.deployments import free_ports  # noqa: E402
from bench.serve import wait_http  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
CASES = [  # name, path, with the token, chunked
    ("no token, Content-Length", "/api/rollback", False, False),
    ("no token, chunked", "/api/rollback", False, True),
    ("token, Content-Length", "/api/rollback", True, False),
    ("token, chunked", "/api/rollback", True, True),
    ("token, /api/abort (reads no body)", "/api/abort", True, False),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Sampler:
    """VmRSS of a process every 5 ms, on a thread, until stopped: the peak of what it saw."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_kib(pid)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


class Upload:
    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        block = b"x" * 65536
        while self.sent < self.total:
            piece = block[: self.total - self.sent]
            self.sent += len(piece)
            yield piece


def size(text: str) -> int:
    units = {"KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
    for unit, factor in units.items():
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def start(code: Path, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    proxy, blue, green, port = free_ports(4)
    # A minimal settings file that the old and the new code both read; free ports, so serve's watch
    # job never meets another deployment's proxy.
    (root / "bluegreen.toml").write_text(f'project = "bench-body-{port}"\n[proxy]\nport = {proxy}\n'
                                         f"[environments.blue]\nport = {blue}\n[environments.green]\nport = {green}\n")
    env = {**os.environ, "PYTHONPATH": str(code), "BLUEGREEN_SERVE__TOKEN": TOKEN, "BLUEGREEN_ACTOR": "bench"}
    proc = subprocess.Popen([sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()", "serve",
                             "--port", str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz")
    return proc, url


def case(code: Path, path: str, token: bool, chunked: bool, total: int, settle: float) -> str:
    import httpx

    with tempfile.TemporaryDirectory(prefix="bench-serve-body-") as tmp:
        proc, url = start(code, Path(tmp))
        try:
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {TOKEN}"
            # A first request loads the route's code; a malformed body makes it act on nothing.
            httpx.post(f"{url}{path}", content=b"{not json", headers=headers, timeout=30)
            before = rss_kib(proc.pid)
            sampler = Sampler(proc.pid)
            upload = Upload(total)
            if not chunked:
                headers["Content-Length"] = str(total)
            began = time.monotonic()
            try:
                answer = httpx.post(f"{url}{path}", content=upload, headers=headers, timeout=300)
                said = f"{answer.status_code} {answer.text[:60]!r}"
            except httpx.HTTPError as exc:
                said = f"{type(exc).__name__}: {exc}"
            took = time.monotonic() - began
            peak = sampler.stop()
            at_once = rss_kib(proc.pid)
            time.sleep(settle)
            later = rss_kib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    return (f"  answer {said}\n  client sent {upload.sent / 1e6:.1f} of {total / 1e6:.0f} MB in {took:.2f} s; "
            f"serve RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, after {at_once / 1024:.1f} MiB"
            f" (and {later / 1024:.1f} MiB {settle:g} s later)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=size, default=size("200MB"))
    parser.add_argument("--code", type=Path, default=REPO, help="the checkout whose `bluegreen serve` runs")
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()
    print(f"serve from {args.code}; a {args.size / 1e6:.0f} MB body per case")
    for name, path, token, chunked in CASES:
        print(f"{name} -> POST {path}")
        print(case(args.code.resolve(), path, token, chunked, args.size, args.settle), flush=True)


if __name__ == "__main__":
    main()
