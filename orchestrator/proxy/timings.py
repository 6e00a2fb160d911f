"""Each request's latency as the proxy timed it, kept as a cumulative histogram per colour.

The proxy times every request it forwards, so a step has a p95 even when the model server
exposes no latency histogram. HAProxy writes one line per request into a ring in its own memory
(no syscall, no disk on the request's path) that ``show events`` on its runtime socket dumps;
``RingReader`` keeps the place it read up to, so each line is counted once, however often the
ring is read, and a reloaded or restarted HAProxy (a new, empty ring) is read from its start.
nginx writes ``$upstream_response_time`` in the access log its driver already reads.

The figure is the server's part of a request: connecting to it, waiting for its answer and
relaying the answer (HAProxy's Tc + Tr + Td, nginx's ``$upstream_response_time``), not the time
the client took to send its request.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable

Buckets = tuple[tuple[float, float], ...]  # (upper bound in seconds, cumulative count), Prometheus' shape

# A superset of the reference server's bounds (and Prometheus' defaults): the extra ones make a
# p95 interpolated between two bounds closer to the real one.
BOUNDS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5,
          0.75, 1.0, 1.5, 2.5, 5.0, 10.0, math.inf)

RING = "bluegreen_timings"  # the HAProxy ring the request lines are written to
TAG = "bgt"  # the first word of a request line: HAProxy writes its own notices to the same loggers
# pid and request counter make each line unique (RingReader finds where it stopped by it); then the
# server, Tc (connect), Tr (until the answer's headers), Td (the answer's body) in ms, and the status.
HAPROXY_LOG_FORMAT = f"{TAG} %pid %rt %s %Tc %Tr %Td %ST"
FLEET_LOG_FORMAT = f"{TAG} %pid %rt %b/%s %Tc %Tr %Td %ST"  # a fleet's one ring: backend/server
TIMING_FIELDS = re.compile(r"^(\S+) (-?\d+) (-?\d+) (-?\d+)$")


class Histogram:
    """Counts of observations per bucket of ``BOUNDS``; only ever grows."""

    def __init__(self) -> None:
        self._counts = [0] * len(BOUNDS)

    def observe(self, seconds: float, n: int = 1) -> None:
        self._counts[bisect.bisect_left(BOUNDS, seconds)] += n  # a value on a bound belongs to it (le)

    @property
    def count(self) -> int:
        return sum(self._counts)

    def cumulative(self) -> Buckets:
        out, total = [], 0
        for bound, n in zip(BOUNDS, self._counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return tuple(out)


def haproxy_timings(lines: Iterable[str]) -> Counter[tuple[str, float]]:
    """How many requests took each (server, seconds), from HAProxy's request lines.

    Other lines are left out, and so are requests the server never answered (HAProxy writes -1
    for a phase that did not happen): those are errors, counted apart. Lines are grouped by their
    timings before any is parsed, so a ring of thousands of lines costs a few milliseconds.
    """
    groups = Counter(_timing_fields(line) for line in lines)
    out: Counter[tuple[str, float]] = Counter()
    for fields, n in groups.items():
        match = TIMING_FIELDS.match(fields)
        if match is None:
            continue
        server, connect, response, data = match.group(1), *(int(v) for v in match.group(2, 3, 4))
        if connect >= 0 and response >= 0:
            out[server, (connect + response + max(0, data)) / 1000] += n
    return out


def _timing_fields(line: str) -> str:
    """``server Tc Tr Td`` of a request line (its tag, pid, counter and status cut off); "" for another line."""
    parts = line.split(" ", 3)
    return parts[3].rpartition(" ")[0] if len(parts) == 4 and parts[0] == TAG else ""


def haproxy_timing(line: str) -> tuple[str, float] | None:
    """(server, seconds) from one of HAProxy's request lines; None as ``haproxy_timings`` leaves it out."""
    return next(iter(haproxy_timings([line])), None)


def nginx_timing(seconds: str) -> float | None:
    """One upstream attempt's ``$upstream_response_time`` ("0.004"; "-" when it was never sent)."""
    try:
        value = float(seconds)
    except ValueError:
        return None
    return value if value >= 0 else None


class RingReader:
    """The lines of a ring dump not seen in the previous dumps.

    A ring holds the newest lines only, oldest first; the last line read is found again in the next
    dump and only what follows it is new. When it is not there, every line is new: the proxy was
    reloaded or restarted (a new ring), or more was written between two reads than the ring holds
    (the lines in between are lost: a p95 then rests on fewer requests, and says how many).
    """

    def __init__(self) -> None:
        self._last = ""

    def new_lines(self, dump: str) -> list[str]:
        start = 0
        if self._last:
            at = dump.rfind("\n" + self._last + "\n")
            if at >= 0:
                start = at + len(self._last) + 2
            elif dump.startswith(self._last + "\n"):
                start = len(self._last) + 1
        lines = [line for line in dump[start:].splitlines() if line.startswith(TAG + " ")]
        if lines:
            self._last = lines[-1]
        elif start == 0:
            self._last = ""  # a new ring with nothing yet: whatever it holds next time is new
        return lines
