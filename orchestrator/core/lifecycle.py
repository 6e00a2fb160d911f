"""``up`` and ``down``: bring the live colour and the proxy up, or stop them, leaving nothing half-done.

``up`` starts the live colour (blue on a fresh deployment) and proves it healthy before the proxy
sends it anything; on any failure it removes what this call started and re-raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bluegreen.orchestrator.core.environment import ensure_environment, publish_scrape_targets, warm_standby
from bluegreen.orchestrator.core.recovery import housekeeping
from bluegreen.orchestrator.core.switch import move_traffic, proxy_sees_up
from bluegreen.orchestrator.deployment import Deployment, other
from bluegreen.orchestrator.errors import EnvironmentFailed
from bluegreen.orchestrator.settings.core import COLORS

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class UpResult:
    live: str
    image: str
    version: str
    url: str
    changed: list[str]
    seconds: float
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def up(dep: Deployment, progress: Progress = _quiet, action: str = "up") -> UpResult:
    """Make the live colour run healthy behind the proxy; change nothing that already is so.

    First finishes a release or rollback that a dead process left half-done (see recovery).
    """
    start = time.monotonic()
    with dep.lock(action) as lock, dep.state.action(dep.actor, action) as audit:
        if lock.stale:
            audit.notes.append(f"cleared a stale lock left by {lock.stale.describe()}")
        notes = housekeeping(dep, progress)
        audit.notes.extend(notes)
        live = dep.state.live_color() or "blue"
        record = dep.state.environment(live)
        api = dep.compose.get(dep.settings.environments.service)
        if record is not None:
            image, version = record.image, record.version
        elif api is not None:  # the compose file names the image (and so the version) of the first start
            image, version = api.image, api.tag
        else:
            version = dep.settings.environments.version
            image = dep.settings.image_ref(version)
        env = record.env if record else {}
        audit.args.update(color=live, image=image)
        changed: list[str] = []
        started_container = False
        started_proxy = False
        try:
            # The live colour serves traffic: never restart it in place just because settings changed.
            info = ensure_environment(dep, live, image, version, progress, env, reuse="same-image")
            if info is not None:
                started_container = True
                changed.append(f"started {live} ({image})")
            weights = {live: 100, other(live): 0}
            standby = warm_standby(dep, live)
            if dep.proxy.running():
                if dep.proxy.weights() != weights:
                    move_traffic(dep, weights, progress)
                    changed.append(f"proxy weights set to {weights}")
                elif started_container and not proxy_sees_up(dep, live, dep.settings.environments.health_timeout,
                                                             progress):
                    # The traffic was already its: nothing better to send it to; say so.
                    changed.append(f"{dep.proxy.name} does not take {live} as up yet")
                if dep.proxy.standby() != standby:
                    dep.proxy.set_standby(standby)
                    changed.append(f"standby set to {standby or 'none'}")
                stopped = dep.proxy.stopped_processes()
                if dep.proxy.reconfigure():
                    changed.append(f"started {', '.join(stopped)} (the others served meanwhile)" if stopped else
                                   f"{dep.proxy.name} reloaded with the changed proxy settings")
            else:
                ensure_proxy_image(dep, progress)
                progress(f"starting {dep.proxy.name} on {dep.proxy_url}")
                dep.proxy.start(weights, standby)
                started_proxy = True
                changed.append(f"started {dep.proxy.name} on {dep.proxy_url}")
            current = info or dep.runtime.inspect(live)
            assert current is not None
            dep.state.record_environment(live, image, version, current.id, current.port, env)
            dep.state.set_live(live, weights)
            publish_scrape_targets(dep)
            if dep.workers:
                from bluegreen.orchestrator.core.workers import current_versions, settle_workers

                versions = current_versions(dep, image)
                moved = settle_workers(dep, live, versions[0] if versions else None,
                                       versions[1] if versions else None, progress)
                if moved:
                    changed.append(moved)
            if dep.pitr is not None:
                started = dep.pitr.start()
                if started:
                    changed.append(started)
        except BaseException:
            if started_proxy:
                dep.proxy.stop()
            if started_container:
                dep.runtime.remove(live)
            raise
        audit.notes.append(", ".join(changed) if changed else "already up; nothing changed")
    return UpResult(live, image, version, dep.proxy_url, changed, round(time.monotonic() - start, 3), notes)


def ensure_proxy_image(dep: Deployment, progress: Progress = _quiet) -> None:
    """The supervised proxy's image, built (offline, about ten seconds) the first time it is needed."""
    supervisor = dep.fleet[0].proxy.supervisor if dep.fleet is not None else dep.settings.proxy.supervisor
    if supervisor != "container":
        return
    from bluegreen.environments.images import PROXY, build_images
    from bluegreen.orchestrator.proxy.supervise import PROXY_IMAGE

    if not dep.proxy_engine.image_exists(PROXY_IMAGE):
        progress(f"building {PROXY_IMAGE} (HAProxy and nginx from Debian; once)")
        build_images(dep.proxy_engine, PROXY, ["latest"], base=dep.settings.images.base, progress=progress)


@dataclass(frozen=True)
class DownResult:
    stopped: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def down(dep: Deployment, progress: Progress = _quiet) -> DownResult:
    """Stop the proxy, then both colours. The live colour and its version are kept for ``up``."""
    with dep.lock("down") as lock, dep.state.action(dep.actor, "down") as audit:
        if lock.stale:
            audit.notes.append(f"cleared a stale lock left by {lock.stale.describe()}")
        audit.notes.extend(housekeeping(dep, progress))
        stopped = []
        if dep.proxy.running():
            progress(f"stopping {dep.proxy.name}")
            stopped.append(dep.proxy.name)
        dep.proxy.stop()  # also removes a supervised proxy that is not running (crashed, engine stopped)
        errors = []
        if dep.workers:
            for color in COLORS:
                if any(w.state != "absent" for w in dep.workers.state(color)):
                    dep.workers.drain(color, progress)
                    stopped.append(f"{color}'s workers")
        for color in COLORS:
            if dep.runtime.inspect(color) is not None:
                progress(f"stopping {color}")
                try:
                    dep.runtime.stop(color)
                    dep.runtime.remove(color)
                    stopped.append(color)
                except EnvironmentFailed as exc:
                    errors.append(exc.message)
        if errors:
            raise EnvironmentFailed("; ".join(errors))
        if dep.pitr is not None and dep.pitr.tool == "litestream" and dep.pitr.running():
            progress("stopping litestream (the archive keeps what it has)")
            dep.pitr.stop()
            stopped.append("litestream")
        dep.state.set_doc("warm", None)
        audit.notes.append(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return DownResult(stopped)
