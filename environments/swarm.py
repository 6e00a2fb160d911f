"""The Docker Swarm runtime: each colour is a service of N replicated tasks.

The same interface as the container runtime (``DockerRuntime``): start a version of a colour,
inspect it, stop it, remove it, set it aside while its slot tries a candidate, read its logs.
Services run with host networking, like the containers: every task on a node needs its own port,
so replica i listens on the colour's port + (i - 1) * ``port_step``. Swarm's templates give each
task its slot number (``{{.Task.Slot}}``) but no arithmetic, so the service's command is the
image's own behind a one-line ``sh`` that sets ``PORT`` from the slot; the proxy then holds one
server per replica (``Backend.servers``). Swarm restarts a task that dies; the colour counts as
running while any of its tasks is, and as degraded until all are back.

A colour set aside (``stash``) cannot keep its service under another name (Swarm does not rename
services): its spec is kept in a Swarm config object and the service is created again from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from bluegreen.environments.engine_api import EngineUnavailable, service_and_tasks, unix_socket_path
from bluegreen.environments.runtime import LABEL, ContainerInfo, DockerRuntime, Mount, TLSFiles, _reason, env_digest
from bluegreen.orchestrator.errors import DockerUnavailable, EnvironmentFailed, ImageNotFound

PORT_SCRIPT = 'export PORT=$((BLUEGREEN_PORT_BASE + (BLUEGREEN_SLOT - 1) * BLUEGREEN_PORT_STEP)); exec "$@"'


class SwarmRuntime(DockerRuntime):
    kind = "swarm"

    def __init__(self, project: str, host: str = "", timeout: float = 30.0, ssh_client: str = "paramiko",
                 tls: TLSFiles | None = None, replicas: int = 1, port_step: int = 1000,
                 converge_timeout: float = 120.0) -> None:
        super().__init__(project, host, timeout, ssh_client, tls)
        self.replicas = replicas
        self.port_step = port_step
        self.converge_timeout = converge_timeout

    # -- the swarm itself ---------------------------------------------------------------------
    def require_manager(self) -> None:
        info = self._call("read the engine's swarm state", self.client.info)
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise DockerUnavailable(
                "runtime.kind = \"swarm\" needs a swarm manager, and this engine is not one "
                f"(swarm state: {swarm.get('LocalNodeState') or 'inactive'})",
                "docker swarm init --advertise-addr <this host's address>   (runbooks/swarm.md)")

    def _call(self, what: str, action: Any, *args: Any, **kwargs: Any) -> Any:
        import docker

        try:
            return action(*args, **kwargs)
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not {what}: {_reason(exc)}") from None

    def _service(self, name: str) -> Any:
        import docker

        try:
            return self.client.services.get(name)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not inspect the service {name}: {_reason(exc)}") from None

    # -- colours ------------------------------------------------------------------------------
    def start(self, color: str, image: str, version: str, port: int, env: Mapping[str, str],
              mounts: tuple[Mount, ...] = (), command: list[str] | None = None,
              options: Mapping[str, Any] | None = None) -> ContainerInfo:
        """``options`` (a compose service's container options) have no swarm form: the settings
        refuse environments.compose with runtime.kind = "swarm"."""
        import docker
        from docker.types import Mount as DockerMount
        from docker.types import RestartPolicy, ServiceMode

        self.require_manager()
        self.require_image(image)
        argv = command or self._image_argv(image)
        if not argv:
            raise EnvironmentFailed(f"{image} names no command to run", "set environments.command in bluegreen.toml")
        labels = {f"{LABEL}.project": self.project, f"{LABEL}.color": color, f"{LABEL}.version": version,
                  f"{LABEL}.image": image, f"{LABEL}.port": str(port), f"{LABEL}.env-digest": env_digest(env),
                  f"{LABEL}.replicas": str(self.replicas), f"{LABEL}.port-step": str(self.port_step)}
        full_env = {**env, "BLUEGREEN_SLOT": "{{.Task.Slot}}", "BLUEGREEN_PORT_BASE": str(port),
                    "BLUEGREEN_PORT_STEP": str(self.port_step)}
        try:
            self.client.services.create(
                image, command=["sh", "-c", PORT_SCRIPT, "bluegreen-task"], args=argv, name=self.name(color),
                env=[f"{k}={v}" for k, v in full_env.items()], labels=labels, container_labels=labels,
                mode=ServiceMode("replicated", replicas=self.replicas), networks=["host"],
                mounts=[DockerMount(m.target, m.source, type="bind", read_only=m.read_only) for m in mounts],
                user=f"{os.getuid()}:{os.getgid()}", stop_grace_period=30 * 10**9, stop_signal="SIGTERM",
                restart_policy=RestartPolicy(condition="any", delay=10**9))
        except docker.errors.ImageNotFound:
            raise ImageNotFound(f"image {image} is not on the Docker engine") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise EnvironmentFailed(f"a service named {self.name(color)} already exists",
                                        f"bluegreen down, or docker service rm {self.name(color)} if it is not ours"
                                        ) from None
            raise EnvironmentFailed(f"docker could not create {color}'s service: {_reason(exc)}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not start {color}: {_reason(exc)}") from None
        return self._converge(color)

    def _image_argv(self, image: str) -> list[str]:
        config = self._call(f"inspect {image}", self.client.images.get, image).attrs.get("Config") or {}
        return list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])

    def _converge(self, color: str) -> ContainerInfo:
        """Wait until every task of the colour runs; a colour whose tasks keep failing is refused."""
        deadline = time.monotonic() + self.converge_timeout
        while True:
            info = self.inspect(color)
            if info is None:
                raise EnvironmentFailed(f"{color}'s service disappeared while starting")
            if info.state == "running":
                return info
            failed = self._failed_tasks(color)
            if failed >= 2 * self.replicas:
                message = f"{color}'s tasks keep failing ({failed} failed: {self._last_error(color)})"
                logs = self.log_tail(color)
                self.remove(color)
                raise EnvironmentFailed(message + (f"\n  last log lines:\n    {logs.replace(chr(10), chr(10) + '    ')}"
                                                   if logs else ""), f"bluegreen logs {color}")
            if time.monotonic() > deadline:
                message = (f"{color}'s {self.replicas} tasks did not all run within {self.converge_timeout:g}s "
                           f"({info.state}; {self._last_error(color)})")
                self.remove(color)
                raise EnvironmentFailed(message, "runtime.converge_timeout; docker service ps " + self.name(color))
            time.sleep(0.2)

    def _tasks(self, color: str) -> list[dict[str, Any]]:
        found = self._service_and_tasks(color)
        return [] if found is None else found[1]

    def _failed_tasks(self, color: str) -> int:
        return sum(1 for t in self._tasks(color) if (t.get("Status") or {}).get("State") in ("failed", "rejected"))

    def _last_error(self, color: str) -> str:
        tasks = sorted(self._tasks(color), key=lambda t: t.get("UpdatedAt", ""), reverse=True)
        for t in tasks:
            status = t.get("Status") or {}
            if status.get("Err"):
                return str(status["Err"])
        return "no task error reported"

    def inspect(self, color: str) -> ContainerInfo | None:
        found = self._service_and_tasks(color)
        if found is None:
            return None
        attrs, tasks = found
        spec = attrs.get("Spec") or {}
        labels = spec.get("Labels") or {}
        desired = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0))
        live = [t for t in tasks if t.get("DesiredState") == "running"]
        running = sum(1 for t in live if (t.get("Status") or {}).get("State") == "running")
        if desired == 0:
            state = "stopped"
        elif running >= desired:
            state = "running"
        elif running > 0:
            state = f"degraded ({running}/{desired} tasks running)"
        else:
            state = f"starting (0/{desired} tasks running)"
        ended = [t for t in tasks if ((t.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode") is not None
                 and t.get("DesiredState") != "running"]
        exit_code = None
        if ended:
            last = max(ended, key=lambda t: t.get("UpdatedAt", ""))
            exit_code = int(last["Status"]["ContainerStatus"]["ExitCode"])
        return ContainerInfo(color=color, name=str(spec.get("Name", self.name(color))),
                             id=str(attrs.get("ID", ""))[:12], image=labels.get(f"{LABEL}.image", ""),
                             version=labels.get(f"{LABEL}.version", ""),
                             port=int(labels.get(f"{LABEL}.port", 0)),
                             state=state, exit_code=exit_code, started_at=attrs.get("CreatedAt", ""),
                             env_digest=labels.get(f"{LABEL}.env-digest", ""), tasks=f"{running}/{desired}")

    def _service_and_tasks(self, color: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The service and its tasks: one plain engine API call each over the unix socket when the engine
        is local (status and rollback do not import the SDK), else through the SDK."""
        socket_path = unix_socket_path(self.host)
        if socket_path is not None:
            try:
                return service_and_tasks(socket_path, self.name(color), self.timeout)
            except EngineUnavailable as exc:
                where = self.host or os.environ.get("DOCKER_HOST") or f"unix://{socket_path}"
                raise DockerUnavailable(f"the Docker engine at {where} does not answer: {exc}") from None
        service = self._service(self.name(color))
        if service is None:
            return None
        return service.attrs, list(self._call(f"list {color}'s tasks", service.tasks))

    def stop(self, color: str, timeout: int = 10) -> None:
        """Scale to zero: every task drains (SIGTERM, 30 s grace), the service's spec stays."""
        service = self._service(self.name(color))
        if service is not None:
            self._call(f"scale {color} to 0", service.scale, 0)

    def kill(self, color: str) -> None:
        """SIGKILL every task of the colour at once; Swarm starts new ones."""
        label = f"com.docker.swarm.service.name={self.name(color)}"
        for container in self._call("list containers", self.client.containers.list, filters={"label": label}):
            self._call(f"kill a task of {color}", container.kill)

    def remove(self, color: str) -> None:
        service = self._service(self.name(color))
        if service is not None:
            self._call(f"remove {color}'s service", service.remove)
            self._wait_gone(color)

    def _wait_gone(self, color: str) -> None:
        """Until the removed service's tasks have stopped (their ports are free for the next one)."""
        deadline = time.monotonic() + 60
        label = f"com.docker.swarm.service.name={self.name(color)}"
        while time.monotonic() < deadline:
            left = self._call("list containers", self.client.containers.list, filters={"label": label})
            if not left:
                return
            time.sleep(0.2)

    # -- setting a warm colour aside -------------------------------------------------------------
    def _config_name(self, color: str) -> str:
        return f"{self.stash_name(color)}-spec"

    def _spec_of(self, color: str) -> dict[str, Any] | None:
        service = self._service(self.name(color))
        if service is None:
            return None
        spec = service.attrs.get("Spec") or {}
        container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
        labels = spec.get("Labels") or {}
        env = dict(item.split("=", 1) for item in container.get("Env") or [] if "=" in item)
        for key in ("BLUEGREEN_SLOT", "BLUEGREEN_PORT_BASE", "BLUEGREEN_PORT_STEP"):
            env.pop(key, None)
        mounts = [[m.get("Source", ""), m.get("Target", ""), bool(m.get("ReadOnly"))]
                  for m in container.get("Mounts") or []]
        return {"image": labels.get(f"{LABEL}.image", container.get("Image", "")), "labels": labels, "env": env,
                "argv": list(container.get("Args") or []), "mounts": mounts,
                "port": int(labels.get(f"{LABEL}.port", 0))}

    def stash(self, color: str, timeout: int = 10) -> bool:
        import docker

        spec = self._spec_of(color)
        if spec is None:
            return False
        self.discard_stash(color)
        try:
            self.client.configs.create(name=self._config_name(color), data=json.dumps(spec).encode(),
                                       labels={f"{LABEL}.project": self.project})
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not keep {color}'s spec aside: {_reason(exc)}") from None
        self.remove(color)
        return True

    def _stashed(self, color: str) -> Any:
        configs = self._call("list configs", self.client.configs.list, filters={"name": self._config_name(color)})
        return next((c for c in configs if c.name == self._config_name(color)), None)

    def has_stash(self, color: str) -> bool:
        return self._stashed(color) is not None

    def unstash(self, color: str) -> bool:
        import base64

        config = self._stashed(color)
        if config is None:
            return False
        data = config.attrs.get("Spec", {}).get("Data", "")
        spec = json.loads(base64.b64decode(data))
        labels = spec["labels"]
        self.remove(color)
        self.start(color, spec["image"], labels.get(f"{LABEL}.version", ""), int(spec["port"]), spec["env"],
                   tuple(Mount(src, dst, ro) for src, dst, ro in spec["mounts"]), command=spec["argv"] or None)
        self.discard_stash(color)
        return True

    def discard_stash(self, color: str) -> None:
        import docker

        config = self._stashed(color)
        if config is not None:
            with contextlib.suppress(docker.errors.NotFound):
                config.remove()

    # -- logs -----------------------------------------------------------------------------------
    def logs(self, color: str, tail: int | None = 100, follow: bool = False) -> Iterator[bytes]:
        service = self._service(self.name(color))
        if service is None:
            raise EnvironmentFailed(f"{color} has no service", "bluegreen status")
        chunks = self._call(f"read {color}'s logs", service.logs, stdout=True, stderr=True, follow=follow,
                            tail=tail if tail is not None else "all")
        yield from chunks
