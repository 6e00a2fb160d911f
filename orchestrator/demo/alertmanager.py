"""A real Alertmanager for the demos: configured to deliver to a serve's webhook with its token, started,
and waited for until it is ready."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path


def binary() -> str | None:
    """Debian's prometheus-alertmanager (or an alertmanager on PATH), if installed."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def start(program: str, root: Path, port: int, serve_port: int, token_file: Path,
          group_by: list[str]) -> subprocess.Popen[bytes]:
    """Alertmanager on ``port``, delivering every alert to serve's /api/alerts at once (group_wait 0s)."""
    import httpx

    config = root / "alertmanager.yml"
    config.write_text(json.dumps({
        "route": {"receiver": "bluegreen", "group_by": group_by, "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "bluegreen", "webhook_configs": [{
            "url": f"http://127.0.0.1:{serve_port}/api/alerts", "send_resolved": False,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}}]}]}))
    proc = subprocess.Popen([program, f"--config.file={config}", f"--storage.path={root / 'alertmanager'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc
