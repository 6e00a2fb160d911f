"""Load generators for the benchmarks: wrk (kept-alive, as fast as it can) and hey (rate-limited or new
connections), bounded in time, with their reports parsed into one shape."""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BODY = '{"features": [5.1, 3.5, 1.4, 0.2]}'
POST_LUA = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    raw: str = ""

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(text: str) -> WrkResult:
    def grab(pattern: str, default: str = "0") -> str:
        m = re.search(pattern, text)
        return m.group(1) if m else default

    socket_errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    return WrkResult(requests=int(grab(r"(\d+) requests in")), rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
                     p50_ms=_ms(grab(r"\n\s+50%\s+(\S+)", "nan")), p99_ms=_ms(grab(r"\n\s+99%\s+(\S+)", "nan")),
                     max_ms=_ms(grab(r"Latency\s+\S+\s+\S+\s+(\S+)", "nan")),
                     non_2xx=int(grab(r"Non-2xx or 3xx responses: (\d+)")), socket_errors=socket_errors, raw=text)


def wrk(url: str, seconds: float, threads: int, connections: int, lua: str | None = None) -> WrkResult:
    """wrk as fast as it can for ``seconds`` over kept-alive connections."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
        if lua:
            script = Path(tmp) / "post.lua"
            script.write_text(lua)
            argv += ["-s", str(script)]
        out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 30).stdout
    return parse_wrk(out)


def parse_hey(text: str) -> WrkResult:
    def grab(pattern: str, default: str = "nan") -> str:
        m = re.search(pattern, text)
        return m.group(1) if m else default

    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+(?!\d+ responses)", text, re.MULTILINE))
    return WrkResult(requests=sum(codes.values()) + errors, rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
                     p50_ms=float(grab(r"50%+ in ([\d.]+) secs")) * 1000,
                     p99_ms=float(grab(r"99%+ in ([\d.]+) secs")) * 1000,
                     max_ms=float(grab(r"Slowest:\s+([\d.]+) secs")) * 1000,
                     non_2xx=sum(n for c, n in codes.items() if not 200 <= c < 300), socket_errors=errors, raw=text)


def hey_command(url: str, seconds: float, concurrency: int, rate: float | None = None,
                keepalive: bool = True) -> list[str]:
    """hey's argv: POST the reference body for ``seconds``; ``rate`` is the total requests/s wanted."""
    argv = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json", "-d", BODY]
    if rate:
        argv += ["-q", f"{rate / concurrency:.2f}"]  # hey's -q is per worker
    if not keepalive:
        argv.append("-disable-keepalive")
    return [*argv, url]


def hey(url: str, seconds: float, concurrency: int, rate: float | None = None, keepalive: bool = True) -> WrkResult:
    out = subprocess.run(hey_command(url, seconds, concurrency, rate, keepalive), capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    return parse_hey(out)
