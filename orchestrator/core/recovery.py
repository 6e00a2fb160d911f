"""Bringing traffic to a healthy colour after a failure or a crash, and retiring the warm colour.

``settle`` is the one mechanism behind every way a release or rollback ends badly: a failed
check, Ctrl-C, an abort from another terminal, or a ``kill -9`` noticed later by the next
command. It never sends traffic to a dead colour or to a candidate that did not pass its gate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bluegreen.orchestrator.core import migrations
from bluegreen.orchestrator.core.environment import ensure_environment
from bluegreen.orchestrator.core.migrations import SchemaDatabase
from bluegreen.orchestrator.core.switch import proxy_sees_up
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError, ProxyError, ReleaseFailed
from bluegreen.orchestrator.model.health import wait_healthy
from bluegreen.orchestrator.state.journal import Journal, ReleaseRecord

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class Settled:
    color: str  # the colour that now has all traffic
    status: str
    reason: str


def colour_ok(dep: Deployment, color: str, image: str | None) -> bool:
    """The colour's container runs ``image`` and answers /health with 200."""
    info = dep.runtime.inspect(color)
    return bool(info and info.running and (image is None or info.image == image) and dep.probe(color).healthy)


def settle(dep: Deployment, rec: ReleaseRecord, status: str, reason: str, progress: Progress = _quiet) -> Settled:
    """End ``rec`` with all traffic on a healthy colour, preferring the one that was serving.

    For a release the serving colour is ``from_color``; the candidate is used only when the
    serving colour is dead and the candidate passed its health gate. For a rollback the
    target is preferred once it passed its gate. When neither is usable, the serving colour
    is started again from its image. Raises (leaving the journal open for a later recover)
    only when the proxy cannot be changed.
    """
    journal = Journal(dep.state)
    planned = {step["name"] for step in rec.plan.get("steps", [])}
    # A warm rollback's target was serving moments ago: it needs no gate to count as proven.
    candidate_proven = rec.step_done("gate") or (rec.kind == "rollback" and "gate" not in planned)
    order = [(rec.from_color, rec.from_image, True), (rec.to_color, rec.image, candidate_proven)]
    if rec.kind == "rollback":
        order.reverse()
    usable = [c for c, image, allowed in order if allowed and colour_ok(dep, c, image)]
    if not usable:
        progress(f"neither colour is healthy: starting {rec.from_color} again with {rec.from_image}")
        assert rec.from_image is not None and rec.from_version is not None
        ensure_environment(dep, rec.from_color, rec.from_image, rec.from_version, progress, rec.from_env)
        usable = [rec.from_color]
    running = dep.proxy.running()
    target = _taken_as_up(dep, usable, progress) if running else usable[0]
    other = rec.to_color if target == rec.from_color else rec.from_color
    weights = {target: 100, other: 0}
    if running:
        dep.proxy.set_weights(weights)
    else:  # a proxy starting takes its servers as up until a check fails
        progress(f"the proxy was down: starting it with all traffic on {target}")
        dep.proxy.start(weights)
    progress(f"traffic: 100% {target}")
    start = rec.find_step("start")
    stashed = start.detail.get("stashed") if start is not None else None
    current = dep.runtime.inspect(rec.to_color) if stashed else None
    still_in_place = bool(stashed and not dep.runtime.has_stash(rec.to_color) and current is not None
                     and current.image == stashed["image"])  # cut short before it was set aside
    if target == rec.from_color:
        if start is not None and not still_in_place:  # only a container this change started is removed
            try:
                drain_and_remove(dep, rec.to_color)
            except BluegreenError as exc:  # traffic is safe; a leftover container is only untidy
                reason += f"; could not remove {rec.to_color}: {exc.message}"
            restored = restore_stashed(dep, rec, progress)
            if restored:
                reason += f"; {restored}"
        schema = revert_schema(dep, rec, progress)
        if schema:
            reason += f"; {schema}"
        final_status = status
    else:
        final_status = "recovered"
        reason += f"; {rec.from_color} was not healthy, so {target} (which passed its gate) kept the traffic"
    image, version, env = ((rec.from_image, rec.from_version, rec.from_env) if target == rec.from_color
                           else (rec.image, rec.version, rec.env))
    info = dep.runtime.inspect(target)
    if info is not None and image is not None and version is not None:
        dep.state.record_environment(target, image, version, info.id, info.port, env)
    dep.state.set_live(target, weights)
    if dep.workers:
        from bluegreen.orchestrator.core.workers import current_versions, settle_workers

        try:
            versions = current_versions(dep, image)  # as recorded: a failed switch never recorded its versions
            moved = settle_workers(dep, target, versions[0] if versions else None,
                                   versions[1] if versions else None, progress)
        except BluegreenError as exc:
            moved = f"the workers could not be settled on {target}: {exc.message}"
        if moved:
            reason += f"; {moved}"
    journal.finish(rec.id, final_status, reason)
    return Settled(target, final_status, reason)


def _taken_as_up(dep: Deployment, usable: list[str], progress: Progress) -> str:
    """Of the healthy colours, best first, the first the proxy itself takes as up.

    The best is waited for (a colour started moments ago is up to the proxy only after its next
    check); the others must be up now. When the proxy takes none as up, the best is all there is.
    """
    best, *others = usable
    if proxy_sees_up(dep, best, dep.settings.environments.health_timeout, progress):
        return best
    for color in others:
        if dep.proxy.wait_servers_up(color, 0):
            progress(f"{dep.proxy.name} does not take {best} as up; {color} is, and keeps the traffic")
            return color
    progress(f"{dep.proxy.name} takes neither colour as up yet: all traffic to {best}")
    return best


def restore_stashed(dep: Deployment, rec: ReleaseRecord, progress: Progress = _quiet) -> str:
    """Bring back the warm colour a release set aside for its candidate: started, healthy, standing by.

    Returns what was done, for the journal ("" when nothing was set aside).
    """
    step = rec.find_step("start")
    stashed = step.detail.get("stashed") if step is not None else None
    if not stashed or not dep.runtime.has_stash(rec.to_color):
        return ""
    color = rec.to_color
    progress(f"bringing {color} ({stashed['version']}) back: it stays warm for rollback")
    try:
        dep.runtime.unstash(color)
        c = dep.contract
        wait_healthy(color, dep.url(color), dep.settings.environments.health_timeout,
                     lambda: _container_problem(dep, color), logs=lambda: dep.runtime.log_tail(color),
                     path=c.path(c.ready_path), expect=c.ready_status)
    except BluegreenError as exc:
        return f"{color} ({stashed['version']}) could not be brought back warm: {exc.message}"
    info = dep.runtime.inspect(color)
    if info is not None:
        dep.state.record_environment(color, stashed["image"], stashed["version"], info.id, info.port,
                                     dict(stashed.get("env") or {}))
    if dep.proxy.running():
        dep.proxy.set_standby(color)
    return f"{color} ({stashed['version']}) is warm again"


def _container_problem(dep: Deployment, color: str) -> str | None:
    info = dep.runtime.inspect(color)
    if info is None:
        return "container disappeared"
    return None if info.running else f"container exited with code {info.exit_code}"


def schema_database(dep: Deployment) -> SchemaDatabase:
    return SchemaDatabase(dep.settings.database.url, dep.settings.sqlite_path)


def revert_schema(dep: Deployment, rec: ReleaseRecord, progress: Progress = _quiet) -> str:
    """Undo the migrations this release applied: down migrations, else restore the snapshot.

    Returns what was done, for the journal ("" when the release applied none).
    """
    step = rec.find_step("migrate")
    if step is None:
        return ""
    if rec.plan.get("migrate_up"):
        down = rec.plan.get("migrate_down")
        if down:
            try:
                progress(f"migration down command: {down}")
                run_migration_command(dep, rec.image, rec.env, str(down))
                return f"schema reverted by `{down}`"
            except BluegreenError as exc:
                return _restore_snapshot(dep, rec, exc.message, progress)
        return _restore_snapshot(dep, rec, "the migration command has no down command", progress)
    if not rec.plan.get("migrations"):
        return ""
    to_apply = list(step.detail.get("to_apply", []))
    db = schema_database(dep)
    applied = [v for v in db.applied() if v in to_apply]
    if not applied:
        return ""
    by_version = {m.version: m for m in migrations.load(Path(rec.plan["migrations"]))}
    problem = None
    for version in reversed(applied):
        m = by_version.get(version)
        if m is None or m.down is None:
            problem = f"migration {version} has no down step"
            break
        try:
            progress(f"reverting migration {m.version}_{m.name}")
            db.run(m, "down")
        except BluegreenError as exc:
            problem = exc.message
            break
    else:
        return f"schema reverted by down migrations {', '.join(reversed(applied))}"
    return _restore_snapshot(dep, rec, problem, progress)


def run_migration_command(dep: Deployment, image: str, env: dict[str, str], command: str) -> None:
    """Run a migration command in a one-off container of ``image``, wired like the candidate."""
    values = dep.container_env(None, image, env)
    code, output = dep.runtime.run_once(image, ["sh", "-c", command], values, dep.mounts())
    if code != 0:
        tail = "\n    ".join(output.strip().splitlines()[-6:])
        raise ReleaseFailed(f"migration command `{command}` exited with {code}" + (f":\n    {tail}" if tail else ""))


def _restore_snapshot(dep: Deployment, rec: ReleaseRecord, problem: str, progress: Progress) -> str:
    backup_step = rec.find_step("backup")
    set_id = backup_step.detail.get("backup") if backup_step else None
    if not set_id:
        return f"schema NOT reverted ({problem}) and no snapshot to restore"
    progress(f"{problem}: restoring the schema from backup {set_id}")
    _restored, safety = dep.backups.restore(str(set_id), progress, reason=f"release {rec.id} failed")
    return (f"{problem}; the database was restored from backup {set_id}; safety snapshot {safety.id} holds "
            "the state just before that restore (rows written during the release)")


def housekeeping(dep: Deployment, progress: Progress = _quiet) -> list[str]:
    """Run by every command that holds the lock: finish an interrupted release, retire a warm colour.

    The caller holds the lock, so a release still marked running was left by a process that died.
    """
    notes = []
    rec = Journal(dep.state).running()
    if rec is not None and rec.step_done("promote"):
        # Everything was done but writing the end: nothing to undo.
        Journal(dep.state).finish(rec.id, "promoted", "completed; its process died before recording the end")
        notes.append(f"release {rec.id} had completed; recorded it as promoted")
    elif rec is not None:
        progress(f"{rec.kind} {rec.id} of {rec.version} was interrupted at step {rec.step or 'plan'}: recovering")
        settled = settle(dep, rec, "rolled_back",
                         f"interrupted at step {rec.step or 'plan'} (its process died); recovered by {dep.actor}",
                         progress)
        notes.append(f"recovered {rec.kind} {rec.id} (interrupted at {rec.step or 'plan'}): "
                     f"traffic on {settled.color}")
    from bluegreen.orchestrator.core import failover

    notes.extend(failover.notice(dep, progress))
    retired = retire(dep, force=False, progress=progress)
    if retired:
        notes.append(f"retired warm {retired}")
    return notes


def retire(dep: Deployment, force: bool, progress: Progress = _quiet) -> str | None:
    """Stop the warm colour once its window has passed (or now, with ``force``); its name or None."""
    warm = dep.state.get_doc("warm")
    if warm is None:
        return None
    color = str(warm["color"])
    if color == dep.state.live_color():
        dep.state.set_doc("warm", None)
        return None
    if not force and time.time() < float(warm["until"]):
        return None
    weights = dep.proxy.weights() if dep.proxy.running() else {}
    if weights.get(color, 0) > 0:
        raise ProxyError(f"{color} still has {weights[color]}% of traffic; not retiring it",
                         "bluegreen status; bluegreen recover")
    progress(f"retiring {color} (warm window over)" if not force else f"retiring {color}")
    if dep.proxy.running():
        dep.proxy.set_standby(None)
    drain_and_remove(dep, color)
    dep.state.set_doc("warm", None)
    return color


def drain_and_remove(dep: Deployment, color: str, timeout: float = 10.0) -> None:
    """Take a colour out of service without cutting requests off.

    Its weight is already 0; wait until the proxy has no open request to it, then stop it
    gracefully (the model server finishes what it is answering), then remove it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and dep.proxy.running():
        try:
            stats = dep.proxy.stats().get(color)
        except ProxyError:
            break  # the graceful stop below still lets it finish its requests
        if stats is None or stats.current_sessions == 0:
            break
        time.sleep(0.05)
    dep.runtime.stop(color)
    dep.runtime.remove(color)
    dep.state.forget_environment(color)
