"""Loopback port checks done before anything is started, so a taken port changes nothing."""

from __future__ import annotations

import socket

from bluegreen.orchestrator.errors import PortInUse


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free(host: str, port: int, key: str) -> None:
    if not port_free(host, port):
        raise PortInUse(
            f"port {host}:{port} ({key}) is already in use by another process",
            f"ss -ltnp 'sport = :{port}'   then stop that process, or set another {key} in bluegreen.toml",
        )


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports (held open together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_run(n: int, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """The first of ``n`` consecutive free ports (a swarm colour's replicas use consecutive ports)."""
    for _ in range(attempts):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first = int(probe.getsockname()[1])
        if first + n > 65000:
            continue
        socks = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no run of {n} free ports on {host}")
