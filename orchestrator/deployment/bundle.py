"""Turns settings into the runtime objects the core works with (one place, no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bluegreen.environments.runtime import DockerRuntime, Mount, Runtime, TLSFiles
from bluegreen.orchestrator.deployment.workers import Workers
from bluegreen.orchestrator.errors import BluegreenError, ConfigError, ReleaseFailed
from bluegreen.orchestrator.model import quality
from bluegreen.orchestrator.model.contract import Contract, resolve
from bluegreen.orchestrator.model.health import Probe, probe
from bluegreen.orchestrator.proxy import Backend, Proxy
from bluegreen.orchestrator.proxy.fleet import Route, SharedHAProxy
from bluegreen.orchestrator.proxy.haproxy import HAProxy
from bluegreen.orchestrator.proxy.instances import socket_path
from bluegreen.orchestrator.proxy.nginx import Nginx
from bluegreen.orchestrator.settings.core import COLORS
from bluegreen.orchestrator.state.lock import DeploymentLock
from bluegreen.orchestrator.state.store import StateStore, default_actor

if TYPE_CHECKING:
    from bluegreen.backups.litestream import Litestream
    from bluegreen.backups.pgbackrest import PgBackRest
    from bluegreen.backups.sets import BackupStore
    from bluegreen.environments.compose import Service
    from bluegreen.orchestrator.notify.webhooks import Notifier
    from bluegreen.orchestrator.settings.fleet import Fleet, Member
    from bluegreen.orchestrator.settings.model import Settings

CONTAINER_DATA_DIR = "/data"


@dataclass(frozen=True)
class Slot:
    """Where one server listens: blue, green, or a scratch container (``bluegreen compare``)."""

    name: str
    port: int
    ports: dict[str, int] = field(default_factory=dict)


class Deployment:
    """One blue/green deployment: its settings and the adapters built from them.

    In a fleet (``fleet``: the fleet file and this deployment's entry in it), its proxy is its backend
    in the fleet's one HAProxy, reached through the fleet's listener by its route.
    """

    def __init__(self, settings: Settings, actor: str | None = None, fleet: tuple[Fleet, Member] | None = None
                 ) -> None:
        self.settings = settings
        self.actor = actor or default_actor()
        self.fleet = fleet

    @property
    def name(self) -> str:
        return str(self.settings.project)

    SHARED = ("runtime", "engine", "proxy_engine", "contract", "proxy", "shared_proxy", "state", "backups", "notifier",
              "pitr")

    def warm(self) -> Deployment:
        """Build the adapters a long-running process keeps: engine client, contract, proxy, state."""
        for name in ("runtime", "contract", "proxy", "state"):
            getattr(self, name)
        return self

    def acting_as(self, actor: str) -> Deployment:
        """The same deployment, its adapters shared (already built ones), under another actor's name."""
        other = Deployment(self.settings, actor, self.fleet)
        for name in self.SHARED:
            if name in self.__dict__:
                other.__dict__[name] = self.__dict__[name]
        return other

    @cached_property
    def runtime(self) -> Runtime:
        d, r = self.settings.docker, self.settings.runtime
        tls = TLSFiles(d.tls_ca, d.tls_cert, d.tls_key, d.tls_verify)
        if r.kind == "swarm":
            from bluegreen.environments.swarm import SwarmRuntime

            return SwarmRuntime(self.settings.project, d.host, d.timeout, d.ssh_client, tls, r.replicas, r.port_step,
                                r.converge_timeout)
        service = self.settings.environments.service if self.settings.environments.compose else ""
        return DockerRuntime(self.settings.project, d.host, d.timeout, d.ssh_client, tls, service=service)

    @cached_property
    def compose(self) -> dict[str, Service]:
        """The colour's services from the team's compose file (empty without environments.compose):
        the one behind the proxy first, then the workers."""
        e = self.settings.environments
        if not e.compose:
            return {}
        from bluegreen.environments.compose import load

        return load(self.settings.root / e.compose, [e.service, *e.with_])

    @cached_property
    def workers(self) -> Workers:

        return Workers(self)

    @cached_property
    def engine(self) -> DockerRuntime:
        """The Docker engine the colours run on (images are built there)."""
        runtime = self.runtime
        if isinstance(runtime, DockerRuntime):
            return runtime
        d = self.settings.docker
        return DockerRuntime(self.settings.project, d.host, d.timeout, d.ssh_client,
                             TLSFiles(d.tls_ca, d.tls_cert, d.tls_key, d.tls_verify))

    @cached_property
    def proxy_engine(self) -> DockerRuntime:
        """Where the proxy's container runs: here (this machine's engine) while the colours' engine is
        remote, unless proxy.where = "engine"."""
        if self.settings.proxy.where == "here" and self.settings.docker.host.startswith(("ssh://", "tcp://")):
            return DockerRuntime(self.settings.project, "", self.settings.docker.timeout)
        return self.engine

    @cached_property
    def contract(self) -> Contract:
        """How to talk to the model server: the [model] profile with its overrides."""
        return resolve(self.settings.model, self.settings.analysis.task)

    @cached_property
    def task(self) -> quality.TaskChoice:
        """What the quality checks judge, and why: analysis.task, else the holdout's labels, else the
        reference image's task label. A setting that contradicts the labels is refused."""
        a = self.settings.analysis
        labels = None
        if a.holdout:
            try:
                labels = quality.load_holdout(a.holdout, "classification", a.label_column, Path(self.settings.root)).y
            except quality.HoldoutError:
                labels = None  # loading the holdout names the problem where it is used
        image_task = self._image_task() if a.task == "auto" and labels is None else None
        try:
            return quality.choose_task(a.task, labels, image_task)
        except quality.HoldoutError as exc:
            raise ConfigError(str(exc), "set analysis.task to match the labels, or remove it to infer the task   "
                                        "(runbooks/model-contract.md)") from None

    def _image_task(self) -> str | None:
        """The reference images' ``bluegreen.model-task`` label, of what serves (no holdout to read)."""
        for color in [c for c in [self.state.live_color()] if c] + list(COLORS):
            record = self.state.environment(color)
            if record is not None:
                try:
                    return self.runtime.image_label(record.image, "bluegreen.model-task")
                except BluegreenError:
                    return None
        return None

    @cached_property
    def holdout(self) -> quality.Holdout | None:
        """The labelled holdout the quality checks use; None when there is none for this contract."""
        a = self.settings.analysis
        if not a.holdout and self.contract.profile != "reference":
            return None
        try:
            return quality.load_holdout(a.holdout, self.task.task, a.label_column, Path(self.settings.root))
        except quality.HoldoutError as exc:
            raise ReleaseFailed(str(exc), "set analysis.holdout to a JSON or CSV file with labels   "
                                          "(runbooks/model-contract.md)") from None

    @cached_property
    def shared_proxy(self) -> SharedHAProxy:
        """The fleet's one HAProxy (in a fleet only)."""
        assert self.fleet is not None
        return shared_proxy(self.fleet[0])

    @cached_property
    def proxy(self) -> Proxy:
        p = self.settings.proxy
        directory = self.settings.state_dir / p.driver
        if self.fleet is not None:
            fleet, member = self.fleet
            shared = self.shared_proxy
            c = self.contract
            return HAProxy(directory, fleet.proxy.host, fleet.proxy.port, self.backends(), shared.binary,
                           fleet.proxy.check_interval_ms, check_path=c.path(c.ready_path), check_status=c.ready_status,
                           connect_timeout_ms=max(1, round(p.connect_timeout * 1000)), failover=p.failover,
                           shield=p.retry_candidate_failures, shared=shared, name=member.name,
                           strip_prefix=member.prefix if member.strip_prefix else "")
        supervisor = None
        if p.supervisor == "container":
            from bluegreen.orchestrator.proxy.supervise import ContainerSupervisor

            mounts = [directory, socket_path(directory).parent] if p.driver == "haproxy" else [directory]
            supervisor = ContainerSupervisor(self.proxy_engine, f"{self.settings.project}-proxy", sorted(set(mounts)))
        connect_ms = max(1, round(p.connect_timeout * 1000))
        if p.driver == "nginx":
            return Nginx(directory, p.host, p.port, self.backends(), "nginx" if supervisor else p.nginx_binary,
                         supervisor=supervisor, connect_timeout_ms=connect_ms, failover=p.failover,
                         shield=p.retry_candidate_failures)
        c = self.contract
        return HAProxy(directory, p.host, p.port, self.backends(), "haproxy" if supervisor else p.binary,
                       p.check_interval_ms, check_path=c.path(c.ready_path), check_status=c.ready_status,
                       supervisor=supervisor, connect_timeout_ms=connect_ms, failover=p.failover,
                       shield=p.retry_candidate_failures, processes=p.processes)

    def probe(self, color: str, timeout: float = 1.0) -> Probe:
        """The colour's readiness, as the contract defines it."""
        c = self.contract
        return probe(self.url(color), timeout, c.path(c.ready_path), c.ready_status)

    @cached_property
    def state(self) -> StateStore:
        return StateStore(self.settings.state_dir / "state.db")

    @cached_property
    def backups(self) -> BackupStore:
        from bluegreen.backups.sets import PROXY_CONFIG, BackupStore, Sources  # only commands that snapshot pay for it

        s = self.settings
        files = {"bluegreen.toml": s.root / "bluegreen.toml", PROXY_CONFIG: self.proxy.config_path}
        for extra in s.backups.extra_files:
            files[f"extra-{extra.name}"] = s.root / extra
        sources = Sources(database_url=s.database.url, sqlite_path=s.sqlite_path, config_files=files,
                          lock_wait_timeout=s.backups.lock_wait_timeout)
        return BackupStore(s.root / s.backups.dir, sources)

    @cached_property
    def pitr(self) -> Litestream | PgBackRest | None:
        """The continuous archive of the application database, when backups.pitr is on."""
        b, path = self.settings.backups, self.settings.sqlite_path
        if b.pitr == "pgbackrest":
            from bluegreen.backups.pgbackrest import PgBackRest

            p = b.pgbackrest
            stanza = p.stanza or self.settings.project
            root = self.settings.root
            return PgBackRest(self.settings.database.url,
                              root / p.directory if p.directory else Path(f"/var/lib/pgbackrest/bluegreen-{stanza}"),
                              stanza, root / p.data_directory, p.socket_directory, p.os_user, p.binary,
                              p.archive_timeout, p.retention_full, p.bin_dir)
        if b.pitr != "litestream" or path is None:
            return None
        from bluegreen.backups.litestream import Litestream

        return Litestream(path, self.settings.state_dir / "litestream", b.replica, b.litestream_binary)

    @cached_property
    def notifier(self) -> Notifier:
        from bluegreen.orchestrator.notify.webhooks import Notifier

        n = self.settings.notify
        return Notifier(list(n.webhooks), n.timeout, n.retries)

    def notify(self, event: str, text: str, **fields: Any) -> None:
        """Tell the [notify] webhooks, in the background (never delays the caller)."""
        if self.settings.notify.webhooks:
            self.notifier.notify(event, text, project=self.settings.project, **fields)

    def lock(self, operation: str) -> DeploymentLock:
        return DeploymentLock(self.settings.state_dir / "lock").acquire(operation, self.actor)

    def backends(self) -> list[Backend]:
        env = self.settings.environments
        r = self.settings.runtime
        return [Backend(color, env.host, env.color(color).port, r.replicas, r.port_step) for color in COLORS]

    def replica_urls(self, color: str) -> list[str]:
        """Every replica's address (one for the docker runtime); the first is ``url(color)``."""
        env, r = self.settings.environments, self.settings.runtime
        base = env.color(color).port
        return [f"http://{env.host}:{base + i * r.port_step}" for i in range(r.replicas)]

    def url(self, color: str) -> str:
        env = self.settings.environments
        return f"http://{env.host}:{env.color(color).port}"

    @property
    def proxy_url(self) -> str:
        """Where users reach this deployment: its proxy, or in a fleet the fleet's listener and its route's
        prefix (with ``proxy_headers``' Host)."""
        if self.fleet is not None:
            fleet, member = self.fleet
            return f"http://{fleet.proxy.host}:{fleet.proxy.port}{member.prefix}"
        return f"http://{self.settings.proxy.host}:{self.settings.proxy.port}"

    @property
    def proxy_headers(self) -> dict[str, str]:
        """The Host header of this deployment's fleet route (none needed otherwise)."""
        if self.fleet is not None and self.fleet[1].hosts:
            return {"Host": self.fleet[1].hosts[0]}
        return {}

    def slot(self, color: str) -> Slot:
        """Where a colour's server listens: its port and its extra named ports."""
        c = self.settings.environments.color(color)
        return Slot(color, c.port, dict(c.ports))

    def container_env(self, color: str | None, image: str, extra: dict[str, str] | None = None,
                      slot: Slot | None = None) -> dict[str, str]:
        """The environment of a colour's container (or of a scratch ``slot``; with neither, a one-off task's)."""
        env = self.settings.environments
        where = slot if slot is not None else self.slot(color) if color is not None else None
        api = self.compose.get(env.service)
        values = dict(api.environment) if api is not None else {}  # the compose file's, under bluegreen's own
        values.update({"HOST": env.host, "MODEL_IMAGE": image, "DATABASE_URL": self.container_database_url()})
        if where is not None:
            values["PORT"] = str(where.port)
        values.update({k: self.expand(v, where) for k, v in env.env.items()})
        values.update({k: self.expand(v, where) for k, v in (extra or {}).items()})
        return values

    def container_command(self, color: str | None, slot: Slot | None = None) -> list[str] | None:
        """The command that replaces the image's (None: the image's own), placeholders filled in."""
        command = self.settings.environments.command
        api = self.compose.get(self.settings.environments.service)
        if not command and api is not None and api.command:
            command = api.command
        where = slot if slot is not None else self.slot(color) if color is not None else None
        return [self.expand(part, where) for part in command] if command else None

    def expand(self, text: str, where: Slot | None) -> str:
        """{port}, {port:NAME}, {colour}, {host} and {model} in a command or environment value."""
        if "{" not in text:
            return text
        env = self.settings.environments
        name = where.name if where is not None else "task"
        values = {"{host}": env.host, "{model}": self.settings.model.name, "{colour}": name, "{color}": name}
        if where is not None:
            values["{port}"] = str(where.port)
            values.update({f"{{port:{n}}}": str(port) for n, port in where.ports.items()})
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def metrics_urls(self, color: str) -> list[str]:
        """Every replica's metrics (one for the docker runtime, or when metrics have their own port)."""
        first = self.metrics_url(color)
        if first is None:
            return []
        c = self.contract
        if c.metrics_port:
            return [first]
        return [f"{url}{c.metrics_path}" for url in self.replica_urls(color)]

    def metrics_url(self, color: str) -> str | None:
        """Where the colour's Prometheus metrics are, per the contract; None when it has none."""
        c = self.contract
        if not c.metrics_path:
            return None
        env = self.settings.environments
        port = env.color(color).ports.get(c.metrics_port) if c.metrics_port else env.color(color).port
        return None if port is None else f"http://{env.host}:{port}{c.metrics_path}"

    def container_database_url(self) -> str:
        path = self.settings.sqlite_path
        if path is None:
            return self.settings.database.url
        return f"sqlite:///{CONTAINER_DATA_DIR}/{path.name}"

    def mounts(self, service: str | None = None) -> tuple[Mount, ...]:
        """The application database's directory, and a compose service's volumes (default: the one
        behind the proxy)."""
        from bluegreen.environments.compose import container_volumes

        path = self.settings.sqlite_path
        own = () if path is None else (Mount(str(path.parent), CONTAINER_DATA_DIR),)
        spec = self.compose.get(service or self.settings.environments.service)
        return own + (container_volumes(spec, self.settings.project) if spec is not None else ())

    def container_options(self, service: str | None = None) -> dict[str, Any]:
        """A compose service's container options (healthcheck, entrypoint, user, …); none without compose."""
        from bluegreen.environments.compose import container_options

        spec = self.compose.get(service or self.settings.environments.service)
        return container_options(spec) if spec is not None else {}

    def data_dir(self) -> Path | None:
        path = self.settings.sqlite_path
        return None if path is None else path.parent


def other(color: str) -> str:
    return "green" if color == "blue" else "blue"


def shared_proxy(fleet: Fleet) -> SharedHAProxy:
    """A fleet's one HAProxy, built from the fleet file alone; its container runs on this machine's engine."""
    f = fleet.proxy
    directory = fleet.proxy_dir.resolve()
    supervisor = None
    if f.supervisor == "container":
        from bluegreen.orchestrator.proxy.supervise import ContainerSupervisor

        supervisor = ContainerSupervisor(DockerRuntime(fleet.name, "", 30.0), fleet.name,
                                         sorted({directory, socket_path(directory).parent}))
    return SharedHAProxy(directory, f.host, f.port, [Route(m.name, m.hosts, m.prefix) for m in fleet.members],
                         "haproxy" if supervisor else f.binary, supervisor, str(fleet.path), f.processes)
