"""A read-only Docker Engine API call over the unix socket, with the standard library only.

``bluegreen status`` runs often and must start fast; importing the docker SDK (requests,
urllib3, charset detection) costs more than the rest of the command. Inspecting a container is
one GET, so read-only inspection uses this; everything that changes the engine uses the SDK.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any
from urllib.parse import quote

DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineUnavailable(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def unix_socket_path(host: str) -> str | None:
    """The socket path for a unix:// engine address (or the default), None for tcp:// and others."""
    address = host or os.environ.get("DOCKER_HOST", "")
    if not address:
        return DEFAULT_SOCKET
    if address.startswith("unix://"):
        return address[len("unix://"):]
    return None


def inspect_container(socket_path: str, name: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """GET /containers/{name}/json: the container's attributes, or None when there is none."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request("GET", f"/containers/{quote(name)}/json")
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise EngineUnavailable(str(exc) or type(exc).__name__) from None
    finally:
        conn.close()
    if response.status == 404:
        return None
    if response.status != 200:
        raise EngineUnavailable(f"HTTP {response.status}: {body[:200].decode(errors='replace')}")
    return json.loads(body)  # type: ignore[no-any-return]
