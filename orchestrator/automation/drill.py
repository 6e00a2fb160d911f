"""Rollback drills: proof, on a timer, that rolling back and restoring still work, and how long they take.

A drill never hurts users and never spends the real rollback target:

- **warm**: while the previous version is warm, the true path: all traffic to it (a real
  rollback's switch, under the current traffic), then, after the live version passes the health
  gate again, all traffic back to it. The warm colour stays warm.
- **canary**: otherwise, the live version is started in the idle colour, gated, given
  ``drills.weight`` % of traffic for ``drills.hold``, and rolled back; the idle colour is removed.

The recovery time (RTO) is the time from the decision to roll back until users are served by the
target: the proxy confirms all traffic on it and, in a warm drill whose server reports its version,
five answers in a row through the proxy come from the target version. The newest backup set is
verified by restoring it into scratch (one is taken first when there is none). A drill fails when
the RTO exceeds ``drills.max_rto``, the restore fails, or users saw failed requests; it never
overlaps a release (``drills.when_busy``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.core.events import Event, Progress
from bluegreen.orchestrator.core.switch import move_traffic
from bluegreen.orchestrator.deployment import Deployment, other
from bluegreen.orchestrator.errors import BluegreenError, LockHeld
from bluegreen.orchestrator.state.journal import Journal


def _quiet(_msg: str) -> None:
    pass


@dataclass
class DrillReport:
    id: int | None
    kind: str  # warm | canary | skipped
    ok: bool
    rto_s: float | None
    failed_requests: int
    backup: dict[str, Any] = field(default_factory=dict)
    archive: dict[str, Any] | None = None  # the continuous archive restored to a point, when backups.pitr is on
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    queued_s: float = 0.0  # in a fleet: the wait for the host's other drills (fleet [drills] concurrent)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.kind == "skipped":
            return f"drill skipped: {'; '.join(self.reasons)}"
        rto = "n/a" if self.rto_s is None else f"{self.rto_s * 1000:.0f} ms"
        verdict = "passed" if self.ok else "FAILED: " + "; ".join(self.reasons)
        queued = f"; queued {self.queued_s:.1f}s behind the host's other drills" if self.queued_s >= 0.1 else ""
        return (f"{self.kind} drill {verdict} (RTO {rto}, {self.failed_requests} failed requests, backup "
                f"{self.backup.get('id', '-')} {'restored' if self.backup.get('ok') else 'NOT restored'}{queued})")


def _user_failures(dep: Deployment) -> int:
    """Answers the proxy gave users that were not successes: 5xx relayed plus connection failures."""
    return sum(s.responses_5xx + s.errors for s in dep.proxy.stats().values())


def drill(dep: Deployment, progress: Progress = _quiet, slot: Any = None) -> DrillReport:
    """Run one drill, or report why it was skipped (a release holds the lock).

    ``slot`` (a fleet's semaphore) makes the drills of one host's deployments take turns: the
    drill waits for it first, and its report says how long it was queued.
    """
    if slot is None:
        return _drill(dep, progress)
    queued = time.monotonic()
    if not slot.acquire(blocking=False):
        progress(f"drill of {dep.name}: queued behind the host's other drills")
        slot.acquire()
    try:
        return _drill(dep, progress, round(time.monotonic() - queued, 3))
    finally:
        slot.release()


def _drill(dep: Deployment, progress: Progress, queued_s: float = 0.0) -> DrillReport:
    d = dep.settings.drills
    deadline = time.monotonic() + (d.wait if d.when_busy == "wait" else 0)
    while True:
        try:
            lock = dep.lock("drill")
            break
        except LockHeld as exc:
            if time.monotonic() >= deadline:
                return DrillReport(None, "skipped", True, None, 0, reasons=[f"{exc.message} (drills.when_busy = "
                                                                            f"{d.when_busy!r})"])
            time.sleep(1.0)
    with lock, dep.state.action(dep.actor, "drill") as audit:
        from bluegreen.orchestrator.core.recovery import housekeeping

        if queued_s >= 0.1:
            audit.notes.append(f"queued {queued_s:.1f}s behind the host's other drills")
        audit.notes.extend(housekeeping(dep, progress))
        report = _drill_locked(dep, progress)
        report.queued_s = queued_s
        audit.notes.append(report.summary())
        return report


def _drill_locked(dep: Deployment, progress: Progress) -> DrillReport:
    from bluegreen.orchestrator.core.environment import warm_standby

    began = time.monotonic()
    live = dep.state.live_color()
    record = dep.state.environment(live) if live else None
    if live is None or record is None:
        return DrillReport(None, "skipped", True, None, 0, reasons=["nothing is live to drill on"])
    warm = warm_standby(dep, live)
    journal = Journal(dep.state)
    kind = "warm" if warm else "canary"
    target = warm or other(live)
    # A canary drill's step is "start": if its process dies, recovery removes the container it started.
    step = "start" if kind == "canary" else "warm"
    rid = journal.begin("drill", dep.actor, record.image, record.version, record.env, live, target, record.image,
                        record.version, record.env, {"steps": [{"name": step}]})
    journal.step_started(rid, 0, step)
    failures_before = _user_failures(dep)
    report = DrillReport(rid, kind, False, None, 0)
    try:
        report.rto_s = _warm(dep, live, warm, progress) if warm else _canary(dep, live, record, progress)
    except BluegreenError as exc:
        report.reasons.append(f"the drill's rollback failed: {exc.message}")
        progress(f"putting {live} back as the only live colour")
        dep.proxy.set_weights({live: 100, other(live): 0})
    report.failed_requests = max(0, _user_failures(dep) - failures_before)
    report.backup = _verify_newest_backup(dep, progress)
    if dep.pitr is not None:
        report.archive = _restore_archive(dep, progress)
        if not report.archive.get("ok"):
            report.reasons.append(f"the archive did not restore to a point: {report.archive.get('problem')}")
    max_rto = dep.settings.drills.max_rto
    if report.rto_s is not None and report.rto_s > max_rto:
        report.reasons.append(f"RTO {report.rto_s * 1000:.0f} ms is above drills.max_rto = {max_rto * 1000:.0f} ms")
    if not report.backup.get("ok"):
        report.reasons.append(f"the newest backup did not restore: {'; '.join(report.backup.get('problems', []))}")
    if report.failed_requests:
        report.reasons.append(f"{report.failed_requests} requests failed during the drill")
    report.ok = not report.reasons and report.rto_s is not None
    report.seconds = round(time.monotonic() - began, 3)
    journal.step_finished(rid, 0, "done" if report.ok else "failed", report.to_dict())
    journal.finish(rid, "passed" if report.ok else "failed", report.summary(), report.seconds)
    progress(Event("drill", report.summary(), **report.to_dict()))
    if not report.ok:
        dep.notify("drill_failed", report.summary(), **report.to_dict())
    return report


def _switch(dep: Deployment, to: str, away: str, expect: str | None = None) -> float:
    """All traffic to ``to``; the seconds until users are served by it.

    That is until the proxy confirms the weights and, when the contract reads the version from an
    endpoint and ``expect`` names it, until five answers in a row through the proxy come from it.
    """
    from bluegreen.orchestrator.errors import ContractError
    from bluegreen.orchestrator.model.client import ModelClient

    check = expect is not None and dep.contract.version_from == "endpoint"
    with ModelClient(dep.proxy_url, dep.contract, timeout=2, headers=dep.proxy_headers) as client:  # before the clock
        began = time.monotonic()
        weights = {to: 100, away: 0}
        move_traffic(dep, weights)  # part of the RTO: the proxy must take the target as up first
        deadline = time.monotonic() + 10
        while dep.proxy.weights() != weights:
            if time.monotonic() > deadline:
                raise BluegreenError(f"the proxy did not confirm all traffic on {to} within 10 s",
                                     "bluegreen status; runbooks/drills.md")
            time.sleep(0.01)
        streak_began, streak, seen = time.monotonic(), 0, None
        while check and streak < 5:
            if time.monotonic() > deadline:
                raise BluegreenError(f"10 s after the switch the proxy still answered with version {seen}, "
                                     f"not {expect}", "bluegreen status; runbooks/drills.md")
            now = time.monotonic()
            try:
                seen = client.version()
            except ContractError:
                seen = None
            if seen == expect:
                streak_began = now if streak == 0 else streak_began
                streak += 1
            else:
                streak = 0
    return streak_began - began


def _warm(dep: Deployment, live: str, warm: str, progress: Progress) -> float:
    from bluegreen.orchestrator.analysis import gate
    from bluegreen.orchestrator.model.client import ModelClient
    from bluegreen.orchestrator.model.versions import image_version

    progress(f"drill: rolling back to the warm {warm}, under the current traffic")
    warm_record = dep.state.environment(warm)
    rto = _switch(dep, warm, live, image_version(warm_record.version) if warm_record else None)
    progress(Event("rollback", f"drill: all traffic on {warm} after {rto * 1000:.0f} ms", color=warm, rto_s=rto))
    record = dep.state.environment(live)
    assert record is not None
    r = dep.settings.release
    with ModelClient(dep.url(live), dep.contract) as client:  # the roll-forward passes the gate again
        gate.health(client, image_version(record.version), r.predict_checks, r.predict_body,
                    dep.holdout,
                    lambda label: dep.runtime.image_label(record.image, label))
    _switch(dep, live, warm)
    dep.proxy.set_standby(warm)
    progress(f"drill: rolled forward to {live}; {warm} stays warm")
    return rto


def _canary(dep: Deployment, live: str, record: Any, progress: Progress) -> float:
    from bluegreen.orchestrator.analysis import gate
    from bluegreen.orchestrator.core.environment import ensure_environment
    from bluegreen.orchestrator.core.recovery import drain_and_remove
    from bluegreen.orchestrator.model.client import ModelClient
    from bluegreen.orchestrator.model.versions import image_version

    idle = other(live)
    d, r = dep.settings.drills, dep.settings.release
    progress(f"drill: no warm previous version; starting {record.version} in {idle}")
    ensure_environment(dep, idle, record.image, record.version, progress, record.env, reuse="never")
    try:
        with ModelClient(dep.url(idle), dep.contract) as client:
            gate.health(client, image_version(record.version), r.predict_checks, r.predict_body,
                        dep.holdout,
                        lambda label: dep.runtime.image_label(record.image, label))
        # The canary's share reaches it only once the proxy's own check takes it as up.
        move_traffic(dep, {idle: d.weight, live: 100 - d.weight}, progress)
        time.sleep(d.hold)
        progress(f"drill: rolling back from {idle} ({d.weight}%)")
        rto = _switch(dep, live, idle)  # both colours run the same version: the proxy's word is the measure
        progress(Event("rollback", f"drill: all traffic on {live} after {rto * 1000:.0f} ms", color=live, rto_s=rto))
    finally:
        dep.proxy.set_weights({live: 100, idle: 0})
        drain_and_remove(dep, idle)
    return rto


def _restore_archive(dep: Deployment, progress: Progress) -> dict[str, Any]:
    """A restore point now, restored into scratch and checked: the point-in-time path works."""
    import sqlite3
    import tempfile
    from pathlib import Path

    from bluegreen.backups import postgres
    from bluegreen.backups.litestream import Litestream
    from bluegreen.backups.sqlite import integrity, table_counts

    archive = dep.pitr
    assert archive is not None
    try:
        point = archive.restore_point(f"bluegreen-drill-{int(time.time())}")
        began = time.monotonic()
        if isinstance(archive, Litestream):
            assert point.txid is not None
            with tempfile.TemporaryDirectory(prefix="bluegreen-drill-") as scratch:
                into = Path(scratch) / "restored.db"
                archive.restore(into, txid=point.txid)
                with sqlite3.connect(f"file:{into}?mode=ro", uri=True) as copy:
                    check, counts = integrity(copy), table_counts(copy)
        else:
            with archive.scratch(name=point.name, lsn=point.lsn) as server:
                conn = postgres.Target(server.url).connect()
                try:
                    check, counts = "ok", postgres.table_counts(conn)
                finally:
                    conn.close()
        seconds = time.monotonic() - began
    except (BluegreenError, sqlite3.Error) as exc:
        return {"ok": False, "problem": getattr(exc, "message", str(exc))}
    progress(f"drill: archive restored to {point.describe()} in {seconds * 1000:.0f} ms ({check})")
    return {"ok": check == "ok", **point.to_dict(), "restore_s": round(seconds, 3), "tables": counts,
            "problem": None if check == "ok" else f"integrity check: {check}"}


def _verify_newest_backup(dep: Deployment, progress: Progress) -> dict[str, Any]:
    try:
        sets = [s for s in dep.backups.all_sets() if s.manifest.get("kind") != "safety"]
        newest = sets[0] if sets else dep.backups.create(reason="taken by a drill", kind="drill", progress=progress)
        progress(f"drill: restoring backup {newest.id} into scratch")
        report = dep.backups.verify(newest.id, progress)
        return {"id": newest.id, "ok": report.ok, "problems": report.problems}
    except BluegreenError as exc:
        return {"id": None, "ok": False, "problems": [exc.message]}
