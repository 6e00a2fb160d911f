"""A throwaway deployment on free loopback ports, shared by the benchmarks."""

from __future__ import annotations

import socket
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together while choosing, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def write_config(root: Path, project: str, driver: str = "haproxy", bake: str | None = None) -> int:
    """bluegreen.toml in ``root`` from the commented default, on free ports; returns the proxy port."""
    proxy_port, blue, green = free_ports(3)
    text = (REPO / "orchestrator" / "settings" / "default.toml").read_text()
    text = text.replace('project = "bluegreen"', f'project = "{project}"')
    text = text.replace('driver = "haproxy"', f'driver = "{driver}"')
    for old, new in (("port = 8080", proxy_port), ("port = 8101", blue), ("port = 8102", green)):
        text = text.replace(old, f"port = {new}")
    if bake is not None:
        text = text.replace('bake = "30s"', f'bake = "{bake}"')
    (root / "bluegreen.toml").write_text(text)
    return proxy_port
