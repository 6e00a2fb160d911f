"""Services that switch with the traffic: a colour's workers (``environments.with``).

By default only the colour that serves 100 % runs its workers. A switch (promotion, rollback)
drains the old colour's workers first — SIGTERM, then the service's grace period to finish what
they hold and exit — and only then starts the new colour's, so a queue is never worked by two
model versions at once and nothing a worker held is lost. A started worker must pass its compose
``healthcheck`` and not restart; then the queue is watched for ``workers.watch`` seconds: its lag
must not grow and no worker may restart more than ``workers.max_restarts`` times. When the new
workers fail, they are removed and the old colour's come back.

Each worker is a container ``<project>-<colour>-<service>`` on the colours' engine, with host
networking like the colours, the compose file's environment under bluegreen's own (the
application database), its volumes, healthcheck and stop settings.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bluegreen.environments.runtime import LABEL
from bluegreen.orchestrator.errors import DockerUnavailable, ReleaseFailed

if TYPE_CHECKING:
    from bluegreen.environments.compose import Service
    from bluegreen.orchestrator.deployment import Deployment

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass
class WorkerState:
    service: str
    color: str
    name: str
    state: str  # running, exited, restarting, absent …
    health: str  # healthy, unhealthy, starting, none (no healthcheck)
    image: str
    version: str
    restarts: int
    exit_code: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tag_of(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else "latest"


class Workers:
    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        e = dep.settings.environments
        self.services: dict[str, Service] = {name: dep.compose[name] for name in e.with_} if e.compose else {}

    def __bool__(self) -> bool:
        return bool(self.services)

    def name(self, color: str, service: str) -> str:
        return f"{self.dep.settings.project}-{color}-{service}"

    def image(self, service: str, tag: str) -> str:
        """The service's repository (environments.images, else the compose file's) at the release's tag."""
        repository = self.dep.settings.environments.images.get(service) or self.services[service].repository
        return f"{repository}:{tag}"

    @property
    def _client(self) -> Any:
        return self.dep.engine.client

    def _get(self, name: str) -> Any:
        import docker

        try:
            return self._client.containers.get(name)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, OSError) as exc:
            raise DockerUnavailable(f"docker could not inspect {name}: {exc}") from None

    # -- state ----------------------------------------------------------------------------------
    def state(self, color: str) -> list[WorkerState]:
        out = []
        for service in self.services:
            name = self.name(color, service)
            c = self._get(name)
            if c is None:
                out.append(WorkerState(service, color, name, "absent", "none", "", "", 0, None))
                continue
            attrs = c.attrs
            st = attrs.get("State", {})
            labels = attrs.get("Config", {}).get("Labels") or {}
            out.append(WorkerState(
                service, color, name, "restarting" if st.get("Restarting") else st.get("Status", "unknown"),
                (st.get("Health") or {}).get("Status", "none"), labels.get(f"{LABEL}.image", ""),
                labels.get(f"{LABEL}.version", ""), int(attrs.get("RestartCount") or 0),
                st.get("ExitCode") if st.get("Status") != "running" else None))
        return out

    def running(self, color: str) -> bool:
        return bool(self.services) and all(w.state == "running" for w in self.state(color))

    # -- start, drain ---------------------------------------------------------------------------
    def start(self, color: str, versions: Versions, extra_env: dict[str, str] | None = None,
              progress: Progress = _quiet, only: str | None = None) -> None:
        """Start the colour's workers (or ``only`` one), each at its tag in ``versions`` (a str: the
        same tag for all), replacing any of ours there."""
        import docker

        from bluegreen.environments.compose import container_options

        dep = self.dep
        for service, spec in self.services.items():
            if only is not None and service != only:
                continue
            tag = versions if isinstance(versions, str) else versions[service]
            name = self.name(color, service)
            image = self.image(service, tag)
            dep.engine.require_image(image)
            if self._get(name) is not None:  # one of ours is there: drained, never killed with jobs in hand
                self.drain(color, progress, only=service)
            env = {**spec.environment, "HOST": dep.settings.environments.host, "MODEL_IMAGE": image,
                   "DATABASE_URL": dep.container_database_url(), **(extra_env or {})}
            options = container_options(spec)
            labels = {**options.pop("labels", {}), f"{LABEL}.project": dep.settings.project, f"{LABEL}.color": color,
                      f"{LABEL}.service": service, f"{LABEL}.role": "worker", f"{LABEL}.image": image,
                      f"{LABEL}.version": tag}
            data = dep.data_dir()
            if data is not None:
                data.mkdir(parents=True, exist_ok=True)
            progress(f"starting {color}'s {service}: {image}")
            try:
                self._client.containers.run(
                    image, spec.command, name=name, detach=True, network_mode="host", environment=env,
                    labels=labels, volumes={m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
                                            for m in dep.mounts(service)},
                    restart_policy={"Name": "unless-stopped"},
                    **{"user": f"{os.getuid()}:{os.getgid()}", **options})
            except (docker.errors.DockerException, OSError) as exc:
                raise ReleaseFailed(f"docker could not start {name}: {exc}") from None

    def wait_healthy(self, color: str, timeout: float | None = None) -> None:
        """Every worker of the colour runs, has not restarted, and passes its healthcheck (if any)."""
        timeout = self.dep.settings.workers.health_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        settled_since: float | None = None
        while True:
            states = self.state(color)
            bad = [w for w in states if w.state in ("exited", "dead", "absent", "restarting") or w.restarts > 0
                   or w.health == "unhealthy"]
            if bad:
                w = bad[0]
                why = (f"exited with code {w.exit_code}" if w.state == "exited" else
                       f"restarted {w.restarts} times" if w.restarts else w.state if w.state != "running" else w.health)
                raise ReleaseFailed(f"{color}'s {w.service} {why}: {self.log_tail(w.name)}")
            ready = all(w.health in ("healthy", "none") for w in states)
            # A worker without a healthcheck counts once it has run a moment without exiting.
            if ready and all(w.health == "healthy" for w in states):
                return
            if ready:
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since >= 2.0:
                    return
            if time.monotonic() > deadline:
                w = next(w for w in states if w.health not in ("healthy", "none"))
                raise ReleaseFailed(f"{color}'s {w.service} was not healthy within {timeout:g}s ({w.health}): "
                                    f"{self.log_tail(w.name)}")
            time.sleep(0.2)

    def drain(self, color: str, progress: Progress = _quiet, only: str | None = None) -> list[dict[str, Any]]:
        """Stop the colour's workers (or ``only`` one) gracefully (SIGTERM, the grace period to
        finish what they hold, then SIGKILL) and remove them; how each ended."""
        out = []
        for service, spec in self.services.items():
            if only is not None and service != only:
                continue
            name = self.name(color, service)
            c = self._get(name)
            if c is None:
                continue
            grace = max(spec.stop_grace_period, self.dep.settings.workers.drain_timeout)
            progress(f"draining {color}'s {service} (SIGTERM, up to {grace:g}s to finish its jobs)")
            began = time.monotonic()
            try:
                c.stop(timeout=int(grace))
                c.reload()
                code = c.attrs.get("State", {}).get("ExitCode")
                c.remove(force=True)
            except Exception as exc:  # the engine's errors vary; the worker is gone either way
                with contextlib.suppress(Exception):
                    c.remove(force=True)
                code = None
                progress(f"{name}: {exc}")
            out.append({"service": service, "exit_code": code, "seconds": round(time.monotonic() - began, 3)})
        return out

    def remove(self, color: str, only: str | None = None) -> None:
        for service in self.services:
            if only is not None and service != only:
                continue
            c = self._get(self.name(color, service))
            if c is not None:
                with contextlib.suppress(Exception):
                    c.remove(force=True)

    def log_tail(self, name: str, lines: int = 5) -> str:
        c = self._get(name)
        if c is None:
            return "(no container)"
        try:
            text = c.logs(tail=lines).decode(errors="replace").strip()
        except Exception:
            return "(no logs)"
        return " | ".join(text.splitlines()[-lines:]) or "(no output)"

    # -- the switch -----------------------------------------------------------------------------
    def lag(self) -> int | None:
        """Jobs waiting, by workers.lag_query on the application database (None: no query)."""
        query = self.dep.settings.workers.lag_query
        if not query:
            return None
        path = self.dep.settings.sqlite_path
        if path is not None:
            import sqlite3

            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
                db.execute("PRAGMA busy_timeout = 30000")
                return int(db.execute(query).fetchone()[0])
        from bluegreen.backups.postgres import Target

        conn = Target(self.dep.settings.database.url).connect()
        try:
            return int(conn.execute(query).fetchone()[0])
        finally:
            conn.close()

    def watch(self, color: str, progress: Progress = _quiet) -> dict[str, Any]:
        """After a switch: the queue's lag must not grow and the workers must not restart."""
        w = self.dep.settings.workers
        first = self.lag()
        deadline = time.monotonic() + w.watch
        samples = [first] if first is not None else []
        while time.monotonic() < deadline:
            time.sleep(0.5)
            restarts = {s.service: s.restarts for s in self.state(color)}
            failing = {k: v for k, v in restarts.items() if v > w.max_restarts}
            down = [s for s in self.state(color) if s.state != "running"]
            if failing or down:
                name = next(iter(failing), None) or down[0].service
                raise ReleaseFailed(f"{color}'s {name} " + (f"restarted {failing[name]} times (workers.max_restarts = "
                                                            f"{w.max_restarts})" if name in failing else
                                                            f"is {down[0].state}") +
                                    f": {self.log_tail(self.name(color, name))}")
            lag = self.lag()
            if lag is not None:
                samples.append(lag)
        result: dict[str, Any] = {"lag": samples}
        # A steady stream always has a few jobs waiting: only a queue that stays above the tolerance
        # and above where it started, through the second half of the watch, is lag.
        tail = samples[len(samples) // 2:]
        if len(samples) >= 3 and min(tail) > max(w.lag_tolerance, samples[0]):
            raise ReleaseFailed(f"the queue grew while {color}'s workers ran ({samples[0]} -> {samples[-1]} waiting, "
                                f"above workers.lag_tolerance = {w.lag_tolerance}): they do not keep up")
        if samples:
            progress(f"queue after the switch: {samples[0]} -> {samples[-1]} waiting")
        return result

    def switch(self, old: str | None, new: str, versions: Versions, extra_env: dict[str, str] | None,
               old_versions: Versions | None, old_env: dict[str, str] | None, progress: Progress = _quiet,
               only: str | None = None) -> dict[str, Any]:
        """Move the workers from ``old`` to ``new`` (or, with old == new, replace them in place —
        ``only`` one service): drain, start, prove; on failure the old ones come back and
        ReleaseFailed says why. The versions that run afterwards are recorded."""
        if not self.services:
            return {}
        began = time.monotonic()
        in_place = old == new
        started_already = not in_place and self.dep.settings.workers.overlap and self.running(new)
        drained = self.drain(old, progress, only=only if in_place else None) if old is not None else []
        try:
            if not started_already:  # with workers.overlap they have run since the candidate started
                self.start(new, versions, extra_env, progress, only=only if in_place else None)
            self.wait_healthy(new)
            watched = self.watch(new, progress)
        except ReleaseFailed as exc:
            progress(f"{new}'s workers failed ({exc.message}): removing them")
            self.remove(new, only=only if in_place else None)
            if old is not None and old_versions is not None:
                progress(f"starting {old}'s workers again ({describe(old_versions)})")
                self.start(old, old_versions, old_env, progress, only=only if in_place else None)
                self.wait_healthy(old)
            raise
        now = expand(versions, self.services)
        before = expand(old_versions, self.services) if old_versions is not None else None
        if only is not None and before is not None:
            now = {**before, only: now[only]}
        record(self.dep, now, extra_env or {}, before, old_env or {})
        return {"drained": drained, "started": new, "versions": now, **watched,
                "seconds": round(time.monotonic() - began, 3)}


Versions = str | dict[str, str]


def expand(versions: Versions, services: Mapping[str, Any]) -> dict[str, str]:
    return {s: versions for s in services} if isinstance(versions, str) else dict(versions)


def describe(versions: Versions) -> str:
    return versions if isinstance(versions, str) else ", ".join(f"{s} {t}" for s, t in versions.items())


def recorded(dep: Deployment) -> dict[str, Any]:
    """The workers' versions now and before (the state's "workers" document)."""
    return dep.state.get_doc("workers") or {}


def record(dep: Deployment, versions: dict[str, str], env: dict[str, str], previous: dict[str, str] | None,
           previous_env: dict[str, str]) -> None:
    dep.state.set_doc("workers", {"versions": versions, "env": env,
                                  "previous": {"versions": previous, "env": previous_env} if previous else None})
