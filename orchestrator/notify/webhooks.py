"""Notifications: a JSON event POSTed to each webhook in ``[notify]``, in the background.

Sent from a worker thread with a timeout and bounded retries (1 s, 2 s, 4 s … apart): a dead or
slow receiver never delays a rollback, and a full queue drops the oldest news rather than block.
The body has a Slack-compatible ``text`` and the event's fields.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Notifier:
    webhooks: list[str]
    timeout: float = 5.0
    retries: int = 3
    sent: int = 0
    failed: int = 0
    _queue: queue.Queue[dict[str, Any] | None] = field(default_factory=lambda: queue.Queue(maxsize=1000))
    _thread: threading.Thread | None = None

    def notify(self, event: str, text: str, **fields: Any) -> None:
        """Queue ``event`` for every webhook; returns at once."""
        if not self.webhooks:
            return
        doc = {"event": event, "text": f"bluegreen: {text}", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                   time.gmtime()), **fields}
        try:
            self._queue.put_nowait(doc)
        except queue.Full:
            self._queue.get_nowait()
            self._queue.put_nowait(doc)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
            self._thread.start()

    def close(self, wait: float = 0.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(wait)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout) as client:
            while True:
                doc = self._queue.get()
                if doc is None:
                    return
                for url in self.webhooks:
                    self._deliver(client, url, doc)

    def _deliver(self, client: Any, url: str, doc: dict[str, Any]) -> None:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                if client.post(url, json=doc).status_code < 400:
                    self.sent += 1
                    return
            except httpx.HTTPError:
                pass
            if attempt < self.retries:
                time.sleep(min(30.0, 2.0 ** attempt))
        self.failed += 1
        print(f"notification {doc['event']} to {url} failed after {self.retries + 1} attempts", file=sys.stderr)
