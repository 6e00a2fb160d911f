"""Rollback, recover, and the requests one terminal sends to a release running in another.

``rollback`` moves all traffic to the previous version at once when its colour is still warm
(a weight change: milliseconds); otherwise it starts that version in the idle colour, gates it,
and switches once the proxy's own health check takes it as up (see switch.py). ``abort`` and
``promote`` ask a running release to stop or to skip ahead (or, while it waits for an approval check,
to approve it), and wait for it to answer; a release whose process died is recovered instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bluegreen.orchestrator.common.faults import crash_point
from bluegreen.orchestrator.core.recovery import colour_ok, housekeeping, retire, revert_schema, settle
from bluegreen.orchestrator.core.switch import move_traffic
from bluegreen.orchestrator.core.workers import current_versions, follow, settle_workers
from bluegreen.orchestrator.deployment import Deployment, other
from bluegreen.orchestrator.deployment.workers import recorded
from bluegreen.orchestrator.errors import BluegreenError, InvalidRequest, LockHeld, ReleaseFailed
from bluegreen.orchestrator.state.journal import BASELINE, RUNNING, Journal, ReleaseRecord, variant
from bluegreen.orchestrator.state.lock import current_holder

if TYPE_CHECKING:
    from bluegreen.orchestrator.core.lifecycle import UpResult

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass
class RollbackResult:
    id: int | None
    live: str
    image: str
    version: str
    variant: str
    warm: bool  # True: only the weights changed
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    image: str
    version: str
    env: dict[str, str]

    @property
    def variant(self) -> str:
        return variant(self.env)


def resolve_target(dep: Deployment, to_version: str | None) -> Target:
    """What a rollback goes to: the previous version, a version from history, or the baseline variant."""
    live = dep.state.live_color()
    record = dep.state.environment(live) if live else None
    if live is None or record is None:
        raise InvalidRequest("nothing is live, so there is nothing to roll back", "bluegreen up")
    if to_version is None:
        previous = dep.state.get_doc("previous")
        if previous is None:
            raise InvalidRequest("no earlier version to roll back to: nothing has been released here yet",
                                 "bluegreen history; or bluegreen rollback --to baseline")
        return Target(previous["image"], previous["version"], dict(previous.get("env") or {}))
    if to_version == BASELINE:
        # The emergency mode: the live image serving its rules-based fallback instead of the model.
        return Target(record.image, record.version, {**record.env, "MODEL_VARIANT": BASELINE})
    known = Journal(dep.state).versions()
    for color in ("blue", "green"):
        env_record = dep.state.environment(color)
        if env_record is not None:
            known.setdefault(env_record.version, (env_record.image, env_record.env))
    if to_version in known:
        image, env = known[to_version]
        return Target(image, to_version, {k: v for k, v in env.items() if k != "MODEL_VARIANT"})
    candidates = ", ".join(sorted(known)) or "none yet"
    raise InvalidRequest(f"version {to_version} is not in this deployment's history (known: {candidates})",
                         "bluegreen history; or release it: bluegreen release IMAGE")


def rollback(dep: Deployment, to_version: str | None = None, reason: str = "",
             progress: Progress = _quiet, wait: float = 120.0, away_from: str | None = None,
             only: str | None = None) -> RollbackResult:
    """All traffic to the previous version (or ``to_version``); instant when its colour is warm.

    ``away_from`` is the version the caller saw live when it asked. When several callers ask at
    once (an alert storm, a dashboard and a pager), the first rolls back and the others find that
    version no longer live: they report the rollback already done instead of rolling back again.
    """
    began = time.monotonic()
    try:
        lock = dep.lock("rollback")
    except LockHeld:
        running = Journal(dep.state).running()
        if running is None or running.kind != "release" or to_version is not None:
            raise
        # A release is in progress in another process: rolling back means aborting it.
        progress(f"release {running.id} of {running.version} is in progress: asking it to abort")
        rec = _request_and_wait(dep, running, "abort", wait, progress)
        return RollbackResult(rec.id, rec.from_color, rec.from_image or "", rec.from_version or "", "model",
                              True, round(time.monotonic() - began, 3), [f"release {rec.id}: {rec.status}"])
    with lock, dep.state.action(dep.actor, "rollback", {"to": to_version or "previous", "reason": reason}) as audit:
        if lock.stale:
            audit.notes.append(f"cleared a stale lock left by {lock.stale.describe()}")
        audit.notes.extend(housekeeping(dep, progress))
        live = dep.state.live_color()
        record = dep.state.environment(live) if live else None
        if away_from is not None and record is not None and record.version != away_from:
            note = f"already done: {live} serves {record.version}, not {away_from}"
            audit.notes.append(note)
            return RollbackResult(None, live or "", record.image, record.version,
                                  variant(record.env), True, round(time.monotonic() - began, 3),
                                  [note])
        result = _rollback_locked(dep, resolve_target(dep, to_version), reason, progress, began, only)
        audit.notes.append(f"{result.live} serves {result.version} ({result.variant}); warm: {result.warm}")
        return result


def _rollback_locked(dep: Deployment, target: Target, reason: str, progress: Progress,
                     began: float, only: str | None = None) -> RollbackResult:
    live = dep.state.live_color()
    assert live is not None
    live_record = dep.state.environment(live)
    assert live_record is not None
    if (target.image, target.env) == (live_record.image, live_record.env):
        raise InvalidRequest(f"{target.version} ({target.variant}) is already live in {live}", "bluegreen status")
    idle = other(live)
    idle_record = dep.state.environment(idle)
    warm = (idle_record is not None and (idle_record.image, idle_record.env) == (target.image, target.env)
            and colour_ok(dep, idle, target.image))
    steps = [{"name": "switch"}] if warm else [{"name": "start"}, {"name": "gate"}, {"name": "switch"}]
    journal = Journal(dep.state)
    rid = journal.begin("rollback", dep.actor, target.image, target.version, target.env, live, idle,
                        live_record.image, live_record.version, live_record.env, {"steps": steps, "reason": reason})
    seq = 0
    try:
        if not warm:
            # Only a cold rollback needs these; a warm one (the common, urgent case) does not import them.
            from bluegreen.orchestrator.analysis import gate
            from bluegreen.orchestrator.core.environment import ensure_environment
            from bluegreen.orchestrator.model.client import ModelClient
            from bluegreen.orchestrator.model.versions import image_version

            journal.step_started(rid, seq, "start")
            progress(f"{idle} is not warm with {target.version}: starting it")
            info = ensure_environment(dep, idle, target.image, target.version, progress, target.env, reuse="never")
            current = info or dep.runtime.inspect(idle)
            assert current is not None
            dep.state.record_environment(idle, target.image, target.version, current.id, current.port, target.env)
            journal.step_finished(rid, seq, "done")
            seq += 1
            journal.step_started(rid, seq, "gate")
            r = dep.settings.release
            with ModelClient(dep.url(idle), dep.contract) as client:
                gate.health(client, image_version(target.version), r.predict_checks, r.predict_body,
                            dep.holdout,
                            lambda label: dep.runtime.image_label(target.image, label))
            journal.step_finished(rid, seq, "done")
            seq += 1
        journal.step_started(rid, seq, "switch")
        crash_point("switch", "before")
        weights = {idle: 100, live: 0}
        # A colour started just now is up to the gate before it is up to the proxy's own check.
        move_traffic(dep, weights, progress)
        dep.proxy.set_standby(live)  # the version rolled back from stays warm, and stands by
        dep.state.switch_live(
            idle, weights,
            previous={"color": live, "image": live_record.image, "version": live_record.version,
                      "env": live_record.env},
            warm={"color": live, "until": time.time() + dep.settings.release.warm_window})
        journal.step_finished(rid, seq, "done")
    except BaseException as exc:
        journal.step_finished(rid, seq, "failed", {"error": str(exc)})
        rec = journal.get(rid)
        assert rec is not None
        settle(dep, rec, "failed", f"rollback failed: {exc}", progress)
        raise
    seconds = round(time.monotonic() - began, 3)
    progress(f"traffic: 100% {idle} ({target.version}, {target.variant}); {live} stays warm")
    notes = []
    schema = _revert_release_schema(dep, live, live_record.version, progress)
    if schema:
        notes.append(schema)
    if dep.workers:  # the workers follow the traffic back: the rolled-back colour's drained, the target's started
        try:
            if only is None:  # the whole colour goes back: the workers too, at the target's version
                moved = follow(dep, idle, target.image, target.env, progress)
            else:  # --only the API: the workers follow the traffic at their own versions
                now = current_versions(dep, live_record.image)
                moved = settle_workers(dep, idle, now[0] if now else None, now[1] if now else None, progress)
        except BluegreenError as exc:
            moved = f"the workers could not follow to {idle}: {exc.message}"
            progress(moved)
        if moved:
            notes.append(moved)
    journal.finish(rid, "switched", "; ".join(part for part in (reason, *notes) if part), seconds)
    dep.notify("rollback", f"rolled back: {idle} serves {target.version} ({target.variant}) in {seconds:.3f}s"
               + (f": {reason}" if reason else ""), live=idle, version=target.version, seconds=seconds, warm=warm)
    return RollbackResult(rid, idle, target.image, target.version, target.variant, warm, seconds, notes)


def _revert_release_schema(dep: Deployment, color: str, version: str, progress: Progress) -> str:
    """After traffic left ``version``, undo the schema change of the release that brought it.

    Runs after the switch, so traffic never waits for it. SQL migrations are reverted with their
    down files (those still applied only, so a second rollback does nothing); a migration
    command is not re-run here: the note says what to do.
    """
    source = Journal(dep.state).last_promoted(color, version)
    if source is None or source.find_step("migrate") is None:
        return ""
    if source.plan.get("migrate_up"):
        backup = source.find_step("backup")
        set_id = backup.detail.get("backup") if backup else "?"
        return (f"the schema change of release {source.id} (`{source.plan['migrate_up']}`) was not reverted: "
                f"run `{source.plan.get('migrate_down') or 'its down command'}`, or restore backup {set_id}")
    try:
        return revert_schema(dep, source, progress)
    except BluegreenError as exc:
        return f"the schema change of release {source.id} could not be reverted: {exc.message}"


def _request_and_wait(dep: Deployment, rec: ReleaseRecord, what: str, wait: float,
                      progress: Progress) -> ReleaseRecord:
    journal = Journal(dep.state)
    if not journal.request(rec.id, what, dep.actor):
        done = journal.get(rec.id)
        assert done is not None
        return done
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now = journal.get(rec.id)
        if now is not None and now.status != RUNNING:
            progress(f"release {rec.id}: {now.status}" + (f" ({now.reason})" if now.reason else ""))
            return now
        if current_holder(dep.settings.state_dir / "lock") is None:
            break  # its process died before answering: recover instead
        time.sleep(0.1)
    else:
        raise ReleaseFailed(f"release {rec.id} did not answer the {what} request within {wait:g}s",
                            "bluegreen status; bluegreen recover once its process has stopped")
    with dep.lock("recover"):
        current = journal.get(rec.id)
        assert current is not None
        if current.status == RUNNING:
            settle(dep, current, "aborted", f"{what} requested by {dep.actor}; its process had died", progress)
        done = journal.get(rec.id)
        assert done is not None
        return done


def request(dep: Deployment, what: str, wait: float = 120.0, progress: Progress = _quiet) -> ReleaseRecord:
    """Ask the release in progress to ``abort`` or ``promote``, and wait for it to act.

    While the release waits for an approval check, ``promote`` approves that check (see ``approve``)
    and the release goes on with its steps; ``abort`` rejects it.
    """
    rec = Journal(dep.state).running()
    if rec is None or rec.kind != "release":
        raise InvalidRequest("no release is in progress", "bluegreen status; bluegreen history")
    if what == "promote" and rec.awaiting() is not None:
        return approve(dep, wait, progress)
    return _request_and_wait(dep, rec, what, wait, progress)


def approve(dep: Deployment, wait: float = 120.0, progress: Progress = _quiet) -> ReleaseRecord:
    """Approve the approval check the release in progress waits on, and wait until it has taken the answer.

    Returns the release's record: still running (``approval_by(actor)`` says whether this approval was
    taken, or came as the wait ended), or finished, when the wait ended some other way first.
    InvalidRequest when no approval is awaited.
    """
    journal = Journal(dep.state)
    rec = journal.running()
    if rec is None or rec.kind != "release":
        raise InvalidRequest("no release is in progress", "bluegreen status; bluegreen history")
    awaiting = rec.awaiting()
    if awaiting is None:
        raise InvalidRequest(f"release {rec.id} is at {rec.step or 'its start'} and waits for no approval",
                             "bluegreen status; bluegreen promote skips its remaining steps instead")
    if not journal.request(rec.id, "approve", dep.actor):
        now = journal.get(rec.id)
        if now is not None and now.status == RUNNING:
            raise InvalidRequest(f"release {rec.id} already has a request from {now.requested_by} to "
                                 f"{now.request}", "bluegreen status")
        assert now is not None
        return now
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now = journal.get(rec.id)
        assert now is not None
        if now.status != RUNNING:
            progress(f"release {rec.id}: {now.status}" + (f" ({now.reason})" if now.reason else ""))
            return now
        if now.request is None:  # taken: by the check that waited, or, come too late, by nobody
            given = now.approval_by(dep.actor)
            progress(f"approved {given['name']} at {given['step']}: release {rec.id} goes on" if given else
                     f"release {rec.id} no longer waited for approval when it came: nothing was approved")
            return now
        if current_holder(dep.settings.state_dir / "lock") is None:
            raise ReleaseFailed(f"release {rec.id}'s process stopped before it took the approval",
                                "bluegreen recover   (runbooks/recover.md)")
        time.sleep(0.1)
    raise ReleaseFailed(f"release {rec.id} did not take the approval within {wait:g}s",
                        "bluegreen status; bluegreen recover once its process has stopped")


def retire_now(dep: Deployment, progress: Progress = _quiet) -> str | None:
    """Stop the warm previous colour now; its name, or None when nothing was warm."""
    with dep.lock("retire"), dep.state.action(dep.actor, "retire") as audit:
        color = retire(dep, force=True, progress=progress)
        audit.notes.append(f"retired {color}" if color else "nothing warm to retire")
        return color


def recover(dep: Deployment, progress: Progress = _quiet) -> UpResult:
    """Finish an interrupted release or rollback, then make sure the live colour serves behind the proxy."""
    from bluegreen.orchestrator.core.lifecycle import up

    return up(dep, progress, action="recover")


def rollback_worker(dep: Deployment, service: str, progress: Progress = _quiet) -> dict[str, Any]:
    """``bluegreen rollback --only WORKER``: that worker back to its previous version on the live colour."""
    with dep.lock("rollback"), dep.state.action(dep.actor, "rollback", {"only": service}) as audit:
        doc = recorded(dep)
        previous = (doc.get("previous") or {}).get("versions") or {}
        live = dep.state.live_color()
        if live is None or not doc.get("versions") or service not in previous \
                or previous[service] == doc["versions"].get(service):
            raise InvalidRequest(f"{service} has no previous version to roll back to",
                                 "bluegreen history   (bluegreen release IMAGE --only SERVICE releases one)")
        began = time.monotonic()
        now = dict(doc["versions"])
        detail = dep.workers.switch(live, live, {**now, service: previous[service]},
                                    dict((doc.get("previous") or {}).get("env") or {}), now,
                                    dict(doc.get("env") or {}), progress, only=service)
        audit.notes.append(f"{service} back to {previous[service]} on {live}")
        return {"service": service, "live": live, "version": previous[service], "from": now[service],
                "seconds": round(time.monotonic() - began, 3), **detail}
