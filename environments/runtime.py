"""The container runtime for blue and green: the docker SDK behind a small interface.

Containers run with host networking on loopback ports and carry labels
``bluegreen.project``, ``bluegreen.color``, ``bluegreen.version``, ``bluegreen.image``,
``bluegreen.port``. docker errors never leave this module: they become our own errors.
The docker package is imported on first use so that commands which need no engine start fast.

An engine that goes away in the middle of a command (restarted, its socket gone) raises the SDK's
transport errors, which are ``OSError``s, not ``DockerException``s: both are caught as the engine not
answering, never left to escape as a traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from bluegreen.environments.engine_api import EngineUnavailable, inspect_container, unix_socket_path
from bluegreen.orchestrator.errors import DockerUnavailable, EnvironmentFailed, ImageNotFound

LABEL = "bluegreen"


@dataclass(frozen=True)
class ContainerInfo:
    color: str
    name: str
    id: str
    image: str
    version: str
    port: int
    state: str  # running, exited, created, restarting, dead, …
    exit_code: int | None
    started_at: str
    env_digest: str = ""  # identifies the environment it was started with, without revealing it
    tasks: str = ""  # a swarm colour: "running/desired" tasks

    @property
    def running(self) -> bool:
        """It serves: a container that runs, or a swarm colour with any task running (degraded included)."""
        return self.state == "running" or self.state.startswith("degraded")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TLSFiles:
    """Paths for a tcp:// engine with TLS ("" when unset)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    verify: bool = True

    def any(self) -> bool:
        return bool(self.ca or self.cert or self.key)


@dataclass(frozen=True)
class JobRun:
    """A one-off container's run: its exit code (None: killed at its deadline), output and duration."""

    exit_code: int | None
    output: str
    seconds: float
    container: str


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


class Runtime(Protocol):
    """What release, rollback, recovery, drills and status ask of the place the colours run.

    ``DockerRuntime`` runs a colour as one container, ``SwarmRuntime`` (swarm.py) as a service of
    N replicas; the core calls nothing else (runbooks/kubernetes.md sketches a third).
    """

    project: str
    host: str

    def name(self, color: str) -> str: ...
    def ping(self) -> None: ...
    def image_exists(self, ref: str) -> bool: ...
    def image_label(self, ref: str, label: str) -> str | None: ...
    def require_image(self, ref: str) -> None: ...
    def start(self, color: str, image: str, version: str, port: int, env: Mapping[str, str],
              mounts: tuple[Mount, ...] = (), command: list[str] | None = None,
              options: Mapping[str, Any] | None = None) -> ContainerInfo: ...
    def run_once(self, image: str, command: list[str], env: Mapping[str, str], mounts: tuple[Mount, ...] = (),
                 timeout: float = 600.0) -> tuple[int, str]: ...
    def inspect(self, color: str) -> ContainerInfo | None: ...
    def stop(self, color: str, timeout: int = 10) -> None: ...
    def remove(self, color: str) -> None: ...
    def kill(self, color: str) -> None: ...
    def stash(self, color: str, timeout: int = 10) -> bool: ...
    def has_stash(self, color: str) -> bool: ...
    def unstash(self, color: str) -> bool: ...
    def discard_stash(self, color: str) -> None: ...
    def logs(self, color: str, tail: int | None = 100, follow: bool = False) -> Iterator[bytes]: ...
    def log_tail(self, color: str, lines: int = 20) -> str: ...


class DockerRuntime:
    """Start, inspect, stop and remove one project's blue/green containers."""

    def __init__(self, project: str, host: str = "", timeout: float = 30.0, ssh_client: str = "paramiko",
                 tls: TLSFiles | None = None, service: str = "") -> None:
        self.project = project
        self.service = service  # a compose colour: containers are <project>-<colour>-<service>
        self.host = host
        self.timeout = timeout
        self.ssh_client = ssh_client
        self.tls = tls
        self._client: Any = None

    # -- connection -------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                if self.host:
                    client = docker.DockerClient(**self._client_options())
                else:
                    client = docker.from_env(timeout=int(self.timeout))
                client.ping()
            except (docker.errors.DockerException, OSError, *_ssh_errors()) as exc:
                where = self.host or os.environ.get("DOCKER_HOST") or "the default socket /var/run/docker.sock"
                raise DockerUnavailable(f"the Docker engine at {where} does not answer: {_reason(exc)}") from None
            self._client = client
        return self._client

    def _client_options(self) -> dict[str, Any]:
        """How to reach a named engine: unix://, ssh:// (paramiko or the ssh binary) or tcp:// with TLS."""
        import docker

        options: dict[str, Any] = {"base_url": self.host, "timeout": int(self.timeout)}
        if self.host.startswith("ssh://"):
            options["use_ssh_client"] = self.ssh_client == "openssh"
        if self.tls is not None and self.tls.any():
            for label, path in (("docker.tls_ca", self.tls.ca), ("docker.tls_cert", self.tls.cert),
                                ("docker.tls_key", self.tls.key)):
                if path and not os.path.isfile(path):
                    raise DockerUnavailable(f"{label} = {path!r}: no such file",
                                            "check the certificate paths in [docker] (runbooks/remote-engines.md)")
            try:
                options["tls"] = docker.tls.TLSConfig(
                    client_cert=(self.tls.cert, self.tls.key) if self.tls.cert else None,
                    ca_cert=self.tls.ca or None, verify=self.tls.verify)
            except docker.errors.TLSParameterError as exc:
                raise DockerUnavailable(f"the TLS settings in [docker] are not usable: {exc}",
                                        "runbooks/remote-engines.md") from None
        return options

    def ping(self) -> None:
        _ = self.client

    def name(self, color: str) -> str:
        return f"{self.project}-{color}-{self.service}" if self.service else f"{self.project}-{color}"

    # -- images -----------------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        import docker

        try:
            self.client.images.get(ref)
            return True
        except docker.errors.ImageNotFound:
            return False
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"cannot look up image {ref}: {_reason(exc)}") from None

    def image_label(self, ref: str, label: str) -> str | None:
        """One label of an image (the model version, for servers that do not report it)."""
        import docker

        try:
            return (self.client.images.get(ref).labels or {}).get(label)
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"image {ref} is not on the Docker engine") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"cannot look up image {ref}: {_reason(exc)}") from None

    def require_image(self, ref: str) -> None:
        if not self.image_exists(ref):
            raise ImageNotFound(f"image {ref} is not on the Docker engine")

    # -- containers -------------------------------------------------------------------------
    def start(
        self,
        color: str,
        image: str,
        version: str,
        port: int,
        env: Mapping[str, str],
        mounts: tuple[Mount, ...] = (),
        command: list[str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ContainerInfo:
        """Create and start the colour's container (host network, bound to ``port``).

        ``command`` replaces the image's command (None keeps it); ``options`` are more of the
        engine's container options (a compose service's healthcheck, entrypoint, user, …).
        """
        import docker

        self.require_image(image)
        extra = dict(options or {})
        labels = {
            **extra.pop("labels", {}),
            f"{LABEL}.project": self.project,
            f"{LABEL}.color": color,
            f"{LABEL}.version": version,
            f"{LABEL}.image": image,
            f"{LABEL}.port": str(port),
            f"{LABEL}.env-digest": env_digest(env),
        }
        if self.service:
            labels[f"{LABEL}.service"] = self.service
        run: dict[str, Any] = {"user": f"{os.getuid()}:{os.getgid()}", "stop_signal": "SIGTERM", **extra}
        try:
            container = self.client.containers.run(
                image,
                command,
                name=self.name(color),
                detach=True,
                network_mode="host",
                environment=dict(env),
                labels=labels,
                volumes={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts},
                # A crashed server, a restarted engine or a rebooted host brings the colour back by itself.
                restart_policy={"Name": "unless-stopped"},
                **run,
            )
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"image {image} is not on the Docker engine") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise EnvironmentFailed(
                    f"a container named {self.name(color)} already exists",
                    f"bluegreen down, or docker rm -f {self.name(color)} if it is not ours",
                ) from None
            raise EnvironmentFailed(f"docker could not start {color}: {_reason(exc)}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not start {color}: {_reason(exc)}") from None
        return _info(container.attrs)

    def run_once(self, image: str, command: list[str], env: Mapping[str, str], mounts: tuple[Mount, ...] = (),
                 timeout: float = 600.0) -> tuple[int, str]:
        """Run a one-off container of ``image`` (e.g. a migration) to completion: (exit code, output)."""
        run = self.run_job(image, command, env, timeout, mounts=mounts, as_caller=True)
        if run.exit_code is None:
            raise EnvironmentFailed(f"{' '.join(command)} in {image} did not finish within {timeout:g}s; "
                                    "it was killed")
        return run.exit_code, run.output

    def run_job(self, image: str, command: list[str] | None, env: Mapping[str, str], timeout: float,
                mounts: tuple[Mount, ...] = (), as_caller: bool = False, kind: str = "task",
                tail: int | None = None) -> JobRun:
        """Run a one-off container of ``image`` (host network) to completion, for at most ``timeout`` seconds.

        One still running then is killed: its ``exit_code`` is None. Either way the container is removed
        and its output (the last ``tail`` lines, or all) returned. ``as_caller`` runs it as this
        process's user, for files it writes in ``mounts``; otherwise as the image says.
        """
        import docker
        import requests

        self.require_image(image)
        name = f"{self.project}-{kind}-{secrets.token_hex(4)}"
        shown = " ".join(command) if command else "(its own command)"
        began = time.monotonic()
        try:
            container = self.client.containers.run(
                image, command, name=name, detach=True, network_mode="host", environment=dict(env),
                labels={f"{LABEL}.project": self.project, f"{LABEL}.task": kind},
                user=f"{os.getuid()}:{os.getgid()}" if as_caller else None,
                volumes={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts})
        except (docker.errors.DockerException, OSError) as exc:
            raise EnvironmentFailed(f"docker could not run {image} {shown}: {_reason(exc)}") from None
        code: int | None = None
        try:
            try:
                code = int(container.wait(timeout=max(0.001, timeout - (time.monotonic() - began)))["StatusCode"])
            except requests.exceptions.RequestException:
                # Still running at its deadline (the engine's wait timed out): stopped here, not left behind.
                with contextlib.suppress(docker.errors.DockerException):
                    container.kill()
            output = container.logs(tail=tail if tail is not None else "all").decode(errors="replace")
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EnvironmentFailed(f"{shown} in {image} did not finish: {_reason(exc)}") from None
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
        return JobRun(code, output, round(time.monotonic() - began, 3), name)

    def inspect(self, color: str) -> ContainerInfo | None:
        socket_path = unix_socket_path(self.host)
        if socket_path is not None:
            # Read-only and hot (status): a plain engine API call, without importing the SDK.
            try:
                attrs = inspect_container(socket_path, self.name(color), self.timeout)
            except EngineUnavailable as exc:
                where = self.host or os.environ.get("DOCKER_HOST") or f"unix://{socket_path}"
                raise DockerUnavailable(f"the Docker engine at {where} does not answer: {exc}") from None
            return None if attrs is None else _info(attrs)
        container = self._get(color)
        return None if container is None else _info(container.attrs)

    def stop(self, color: str, timeout: int = 10) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after ``timeout`` seconds); nothing to do if absent."""
        self._act(color, "stop", lambda c: c.stop(timeout=timeout))

    def remove(self, color: str) -> None:
        self._act(color, "remove", lambda c: c.remove(force=True))

    def kill(self, color: str) -> None:
        """SIGKILL the colour's process at once (drills and demos of a crash); its restart policy applies."""
        self._act(color, "kill", lambda c: c.kill())

    def _act(self, color: str, verb: str, action: Callable[[Any], object]) -> None:
        import docker

        container = self._get(color)
        if container is None:
            return
        try:
            action(container)
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not {verb} {color}: {_reason(exc)}") from None

    # -- keeping a warm colour aside while its slot runs a candidate ---------------------------------
    def stash_name(self, color: str) -> str:
        return f"{self.name(color)}-stash"

    def stash(self, color: str, timeout: int = 10) -> bool:
        """Stop the colour's container gracefully and keep it under another name; False when there is none."""
        import docker

        container = self._get(color)
        if container is None:
            return False
        try:
            self._remove_named(self.stash_name(color))
            container.stop(timeout=timeout)
            container.rename(self.stash_name(color))
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not set {color} aside: {_reason(exc)}") from None
        return True

    def has_stash(self, color: str) -> bool:
        return self._named(self.stash_name(color)) is not None

    def unstash(self, color: str) -> bool:
        """Give the stashed container its colour's name back and start it; False when there is none."""
        import docker

        container = self._named(self.stash_name(color))
        if container is None:
            return False
        try:
            container.rename(self.name(color))
            container.start()
        except (docker.errors.DockerException, OSError) as exc:
            raise EnvironmentFailed(f"docker could not restart {color}'s stashed container: {_reason(exc)}") from None
        return True

    def discard_stash(self, color: str) -> None:
        self._remove_named(self.stash_name(color))

    def _named(self, name: str) -> Any:
        import docker

        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not inspect {name}: {_reason(exc)}") from None

    def _remove_named(self, name: str) -> None:
        import docker

        container = self._named(name)
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def logs(self, color: str, tail: int | None = 100, follow: bool = False) -> Iterator[bytes]:
        import docker

        container = self._get(color)
        if container is None:
            raise EnvironmentFailed(f"{color} has no container", "bluegreen status")
        try:
            if follow:
                yield from container.logs(stream=True, follow=True, tail=tail if tail is not None else "all")
            else:
                yield container.logs(tail=tail if tail is not None else "all")
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not read {color}'s logs: {_reason(exc)}") from None

    def log_tail(self, color: str, lines: int = 20) -> str:
        """The last lines of a colour's output, for error messages; empty when unavailable."""
        try:
            return b"".join(self.logs(color, tail=lines)).decode(errors="replace").strip()
        except (EnvironmentFailed, DockerUnavailable):
            return ""

    def _get(self, color: str) -> Any:
        import docker

        try:
            return self.client.containers.get(self.name(color))
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not inspect {color}: {_reason(exc)}") from None



def _info(attrs: dict[str, Any]) -> ContainerInfo:
    """Our view of a container from the engine's inspect document."""
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State", {})
    return ContainerInfo(
        color=labels.get(f"{LABEL}.color", ""),
        name=attrs.get("Name", "").lstrip("/"),
        id=attrs.get("Id", "")[:12],
        image=labels.get(f"{LABEL}.image", attrs.get("Config", {}).get("Image", "")),
        version=labels.get(f"{LABEL}.version", ""),
        port=int(labels.get(f"{LABEL}.port", "0") or 0),
        state=state.get("Status", "unknown"),
        exit_code=state.get("ExitCode") if state.get("Status") != "running" else None,
        started_at=state.get("StartedAt", ""),
        env_digest=labels.get(f"{LABEL}.env-digest", ""),
    )


def env_digest(env: Mapping[str, str]) -> str:
    """A short digest of a container's environment: equal settings, equal digest; values stay secret."""
    return hashlib.sha256(json.dumps(dict(env), sort_keys=True).encode()).hexdigest()[:16]


def _ssh_errors() -> tuple[type[Exception], ...]:
    """paramiko's own errors (a refused key, an unknown host key), when the ssh:// transport is installed."""
    try:
        import paramiko
    except ImportError:
        return ()
    return (paramiko.SSHException,)


def _reason(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc)
    return text.splitlines()[0] if text else type(exc).__name__
