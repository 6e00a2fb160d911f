"""A read-only Docker Engine API call over the unix socket, with the standard library only.

``bluegreen status`` and ``rollback`` run often and must start fast; importing the docker SDK
(requests, urllib3, charset detection) costs more than the rest of the command. Inspecting a
container is one GET, so read-only inspection uses this; everything that changes the engine
uses the SDK.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from bluegreen.orchestrator.common import plainhttp

DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineUnavailable(Exception):
    pass


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
    found = get_json(socket_path, f"/containers/{quote(name)}/json", timeout)
    return None if found is None else dict(found)


def get_json(socket_path: str, path: str, timeout: float = 5.0) -> Any:
    """GET ``path`` (with its query string): the decoded answer, or None on 404."""
    try:
        status, body = plainhttp.get(path, host="docker", unix_socket=socket_path, timeout=timeout)
    except plainhttp.HTTPFailure as exc:
        raise EngineUnavailable(str(exc)) from None
    if status == 404:
        return None
    if status != 200:
        raise EngineUnavailable(f"HTTP {status}: {body[:200].decode(errors='replace')}")
    return json.loads(body)


def service_and_tasks(socket_path: str, name: str, timeout: float = 5.0) -> tuple[Any, list[Any]] | None:
    """A swarm service's attributes and its tasks, or None when there is no such service."""
    service = get_json(socket_path, f"/services/{quote(name)}", timeout)
    if service is None:
        return None
    filters = quote(json.dumps({"service": {name: True}}))
    return service, list(get_json(socket_path, f"/tasks?filters={filters}", timeout) or [])
