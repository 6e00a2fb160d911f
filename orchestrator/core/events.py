"""What the core reports while it works: typed events that are also their own line of text.

The core never prints. It hands each happening to a ``Progress`` callback. An ``Event`` is a
``str`` (the line the CLI prints, unchanged) that also carries a ``kind`` and its ``data``, so
that the API keeps them as structured records (``GET /api/events``, the dashboard's stream) and
no face has to parse text. Plain strings still work as progress: a face that wants structure
wraps them as ``Event("progress", text)``.

Kinds: progress, step, weights, sample, verdict, quality, check, approval, rollback, failover, drill, alert,
monitor, notify.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Progress = Callable[[str], None]


class Event(str):
    kind: str
    data: dict[str, Any]
    at: float

    def __new__(cls, kind: str, text: str, /, **data: Any) -> Event:
        event = super().__new__(cls, text)
        event.kind = kind
        event.data = data
        event.at = time.time()
        return event

    def to_dict(self) -> dict[str, Any]:
        return {**self.data, "kind": self.kind, "text": str(self), "at": self.at}


def as_event(item: str) -> Event:
    return item if isinstance(item, Event) else Event("progress", str(item))


class EventLog:
    """The last ``size`` events, numbered, for readers that ask "what happened since N"."""

    def __init__(self, size: int = 2000) -> None:
        self._items: deque[tuple[int, Event]] = deque(maxlen=size)
        self._counter = itertools.count(1)
        self._cond = threading.Condition()

    def __call__(self, item: str) -> None:
        self.add(item)

    def add(self, item: str) -> int:
        with self._cond:
            seq = next(self._counter)
            self._items.append((seq, as_event(item)))
            self._cond.notify_all()
            return seq

    def since(self, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        with self._cond:
            return [{"id": seq, **event.to_dict()} for seq, event in self._items if seq > after][:limit]

    def wait(self, after: int, timeout: float) -> list[dict[str, Any]]:
        """Events after ``after``, waiting up to ``timeout`` seconds for the first one."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items) and self._items[-1][0] > after, timeout)
        return self.since(after)


def tagged(log: EventLog, deployment: str) -> Progress:
    """A progress callback that records each event as about ``deployment`` (a fleet's events, in one log)."""

    def add(item: str) -> None:
        event = as_event(item)
        tagged_event = Event(event.kind, str(event), **{**event.data, "deployment": deployment})
        tagged_event.at = event.at
        log.add(tagged_event)

    return add


def tee(*receivers: Progress) -> Progress:
    """One progress callback that hands every event to each receiver."""

    def send(item: str) -> None:
        for receive in receivers:
            receive(item)

    return send
