"""The workers follow the traffic: after a promotion, a rollback or a failover, only the colour that
serves runs its workers, at the versions recorded for them (the containers themselves are
``deployment.workers.Workers``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bluegreen.orchestrator.deployment import other
from bluegreen.orchestrator.deployment.workers import (
    Progress,
    Versions,
    _quiet,
    describe,
    expand,
    record,
    recorded,
    tag_of,
)

if TYPE_CHECKING:
    from bluegreen.orchestrator.deployment import Deployment


def current_versions(dep: Deployment, live_image: str | None) -> tuple[Versions, dict[str, str]] | None:
    """The versions the workers run (recorded), else the live API's tag; None: nothing to go by."""
    doc = recorded(dep)
    if doc.get("versions"):
        return dict(doc["versions"]), dict(doc.get("env") or {})
    return (tag_of(live_image), {}) if live_image else None


def settle_workers(dep: Deployment, live: str, versions: Versions | None, env: dict[str, str] | None,
                   progress: Progress = _quiet, prove: bool = True) -> str:
    """Workers only on the live colour, at ``versions``: the other colour's drained, the live
    one's running. What was done, for the journal ("" when nothing was)."""
    workers = dep.workers
    if not workers or versions is None:
        return ""
    done = []
    if any(w.state != "absent" for w in workers.state(other(live))):
        workers.drain(other(live), progress)
        done.append(f"drained {other(live)}'s workers")
    wanted = expand(versions, workers.services)
    have = {w.service: w.version for w in workers.state(live) if w.state == "running"}
    if have != wanted:
        workers.start(live, wanted, env, progress)
        if prove:
            workers.wait_healthy(live)
        done.append(f"started {live}'s workers ({describe(wanted)})")
    return "; ".join(done)


def follow(dep: Deployment, live: str, image: str, env: dict[str, str] | None, progress: Progress = _quiet,
           prove: bool = True) -> str:
    """The whole colour changed (a rollback, a failover): the workers go to ``live`` at its API's
    tag, and that is recorded as their versions. ``prove=False`` does not wait for their health
    check (a failover runs under the lock that an urgent rollback may be waiting for; status
    shows their health)."""
    workers = dep.workers
    if not workers:
        return ""
    before = current_versions(dep, None)
    tag = tag_of(image)
    moved = settle_workers(dep, live, tag, env, progress, prove=prove)
    record(dep, expand(tag, workers.services), dict(env or {}),
           expand(before[0], workers.services) if before else None, before[1] if before else {})
    return moved
