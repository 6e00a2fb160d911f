"""Run a release: plan → lock → start the candidate → gate → shift traffic step by step → promote.

Each step is journaled before it acts and completed after. Any failure (a check, Ctrl-C or
SIGTERM, an abort from another terminal, a proxy error) ends in ``recovery.settle``: all
traffic back on the colour that was serving, the candidate stopped, the reason recorded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.analysis import gate, replay
from bluegreen.orchestrator.analysis.stepcheck import Reading, StepCheck
from bluegreen.orchestrator.common.faults import crash_point
from bluegreen.orchestrator.common.ports import require_free
from bluegreen.orchestrator.core import migrations
from bluegreen.orchestrator.core.checks import Rejected, StepChecks, job_images
from bluegreen.orchestrator.core.checks import planned as planned_checks
from bluegreen.orchestrator.core.environment import ensure_environment, publish_scrape_targets
from bluegreen.orchestrator.core.events import Event
from bluegreen.orchestrator.core.plan import Observed, Plan, ReleaseRequest, Step, plan_release
from bluegreen.orchestrator.core.recovery import (
    colour_ok,
    housekeeping,
    retire,
    run_migration_command,
    schema_database,
    settle,
)
from bluegreen.orchestrator.core.switch import move_traffic
from bluegreen.orchestrator.core.workers import current_versions
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.deployment.workers import expand, tag_of
from bluegreen.orchestrator.errors import (
    BluegreenError,
    EnvironmentFailed,
    InvalidRequest,
    ReleaseAborted,
    ReleaseFailed,
)
from bluegreen.orchestrator.model.client import ModelClient
from bluegreen.orchestrator.model.quality import Holdout
from bluegreen.orchestrator.state.journal import Journal

Progress = Callable[[str], None]

POLL = 0.1  # seconds between looks at abort/promote requests while baking


def _quiet(_msg: str) -> None:
    pass


@dataclass
class ReleaseResult:
    id: int
    status: str
    image: str
    version: str
    from_color: str
    to_color: str
    seconds: float
    bake_seconds: float
    start_seconds: float
    steps: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    quality_seconds: float = 0.0  # the gate's quality work: holdout on both colours and the replay

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Requested(Exception):
    def __init__(self, what: str, who: str, reason: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.who = who
        self.reason = reason or f"aborted by {who}"


def observe(dep: Deployment) -> Observed:
    live = dep.state.live_color()
    record = dep.state.environment(live) if live else None
    return Observed(
        live_color=live,
        live_image=record.image if record else None,
        live_version=record.version if record else None,
        live_env=record.env if record else {},
        live_running=bool(live and record and colour_ok(dep, live, record.image)),
    )


def plan(dep: Deployment, request: ReleaseRequest) -> Plan:
    """The plan for ``request`` against what runs now (for --dry-run: takes no lock, changes nothing)."""
    return plan_release(observe(dep), request, planned_checks(dep.settings))


def release(dep: Deployment, request: ReleaseRequest, progress: Progress = _quiet) -> ReleaseResult:
    if request.only is not None:
        check_only(dep, request.only)
        if request.only != dep.settings.environments.service:  # one worker: replaced in place, no traffic moves
            return release_worker(dep, request, progress)
    with dep.lock("release") as lock, dep.state.action(dep.actor, "release", {"image": request.image}) as audit:
        if lock.stale:
            audit.notes.append(f"cleared a stale lock left by {lock.stale.describe()}")
        audit.notes.extend(housekeeping(dep, progress))
        observed = observe(dep)
        the_plan = plan_release(observed, request, planned_checks(dep.settings))
        audit.args.update(version=the_plan.version, to=the_plan.to_color)
        _preflight(dep, the_plan, observed)
        publish_scrape_targets(dep)
        result = _Executor(dep, the_plan, progress, only=request.only).run()
        audit.notes.append(f"release {result.id}: {result.status}")
        return result


def check_only(dep: Deployment, only: str) -> None:
    e = dep.settings.environments
    if not e.compose:
        raise InvalidRequest(f"--only {only}: a colour is one service here (environments.compose is not set)",
                             "release without --only; runbooks/compose.md")
    if only not in (e.service, *e.with_):
        raise InvalidRequest(f"--only {only}: not a service of the colour (it has {', '.join([e.service, *e.with_])})",
                             "bluegreen status   (the workers table)")


def _preflight(dep: Deployment, p: Plan, observed: Observed) -> None:
    """Refuse, before anything changes, what would fail half-way."""
    if not dep.proxy.running():
        raise InvalidRequest(f"the proxy is not running, so {p.from_color} serves nothing to release against",
                             "bluegreen up")
    if not observed.live_running:
        raise InvalidRequest(f"the live colour {p.from_color} is not healthy; a release needs it to fall back to",
                             "bluegreen recover   (runbooks/failed-start.md)")
    dep.runtime.require_image(p.image)
    for image in job_images(dep.settings, p.image):  # a job check's image, missing half-way, would fail it
        dep.engine.require_image(image)
    if p.migrations:
        migrations.load(Path(p.migrations))  # refuse misnamed or orphaned files before any change
    if (p.migrations or p.migrate_up) and not dep.settings.database.url:
        raise InvalidRequest("the release carries a schema change but database.url is empty (no application "
                             "database)", "set database.url, or release without --migrations / --migrate-up")
    if dep.runtime.inspect(p.to_color) is None:
        require_free(dep.settings.environments.host, dep.settings.environments.color(p.to_color).port,
                     f"environments.{p.to_color}.port")


class _Executor:
    def __init__(self, dep: Deployment, plan: Plan, progress: Progress, only: str | None = None) -> None:
        self.dep = dep
        self.only = only  # the API alone: the workers move with the traffic at their own versions
        self.plan = plan
        self.progress = progress
        self.journal = Journal(dep.state)
        self.settings = dep.settings
        self.bake_seconds = 0.0
        self.start_seconds = 0.0
        self.fast_forward: str | None = None  # who asked to promote now
        self.steps: list[dict[str, Any]] = []
        self.clients: tuple[ModelClient, ModelClient] | None = None  # candidate, live
        self.holdout: Holdout | None = None
        self.quality_seconds = 0.0
        self.failed_detail: dict[str, Any] = {}
        self.checks: StepChecks | None = None

    def run(self) -> ReleaseResult:
        p = self.plan
        rid = self.journal.begin("release", self.dep.actor, p.image, p.version, p.env, p.from_color, p.to_color,
                                 p.from_image, p.from_version, p.from_env, p.to_dict())
        self.rid = rid
        self.checks = StepChecks(self.dep, p, rid, self.journal, self.progress, self._approval_answer,
                                 self._check_requests)
        began = time.monotonic()
        seq = 0
        step = p.steps[0]
        previous_handler = signal.signal(signal.SIGTERM, _sigterm)
        try:
            for seq, step in enumerate(p.steps):
                self._check_requests()
                self.journal.step_started(rid, seq, step.name)
                self.progress(Event("step", "", release=rid, step=step.name, seq=seq, action=step.action,
                                    weight=step.weight, bake=step.bake))
                crash_point(step.name, "before")
                detail = self._do(step, seq)
                self.journal.step_finished(rid, seq, "done" if not detail.get("skipped") else "skipped", detail)
                self.steps.append({"name": step.name, "outcome": "done", **detail})
                crash_point(step.name, "after")
        except BaseException as exc:
            status, reason, error = self._classify(exc, step)
            detail = {"error": reason, **self.failed_detail}  # what the failed check saw, for the history
            self.journal.step_finished(rid, seq, "failed", detail)
            self.steps.append({"name": step.name, "outcome": "failed", **detail})
            self.progress(f"{step.name} failed: {reason}")
            self.progress(Event("rollback", f"returning all traffic to {p.from_color}", release=rid,
                                color=p.from_color, version=p.from_version, step=step.name, reason=reason))
            rec = self.journal.get(rid)
            assert rec is not None
            settle(self.dep, rec, status, reason, self.progress)
            self.dep.notify("release_failed", f"release {rid} of {p.version} {status} at {step.name}: {reason}",
                            release=rid, version=p.version, step=step.name, status=status)
            if isinstance(exc, BluegreenError | _Requested | KeyboardInterrupt):
                raise error from None
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            for client in self.clients or ():
                client.close()
        seconds = time.monotonic() - began
        self.journal.finish(rid, "promoted", "", round(seconds, 3))
        return ReleaseResult(rid, "promoted", p.image, p.version, p.from_color, p.to_color, round(seconds, 3),
                             round(self.bake_seconds, 3), round(self.start_seconds, 3), self.steps,
                             quality_seconds=round(self.quality_seconds, 3))

    def _classify(self, exc: BaseException, step: Step) -> tuple[str, str, BluegreenError]:
        p = self.plan
        back = f"traffic is back on {p.from_color} ({p.from_version})"
        if isinstance(exc, _Requested):
            reason = exc.reason
            return "aborted", reason, ReleaseAborted(f"release of {p.version} {reason} at {step.name}; {back}")
        if isinstance(exc, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C or SIGTERM)"
            return "aborted", reason, ReleaseAborted(f"release of {p.version} {reason} at {step.name}; {back}")
        if isinstance(exc, BluegreenError):
            return "rolled_back", exc.message, ReleaseFailed(
                f"release of {p.version} failed at {step.name}: {exc.message}\n  {back}",
                "bluegreen history --limit 3   (runbooks/failed-release.md)")
        reason = f"{type(exc).__name__}: {exc}"
        return "rolled_back", reason, ReleaseFailed(f"release of {p.version} failed at {step.name}: {reason}; {back}")

    # -- steps ---------------------------------------------------------------------------------
    def _do(self, step: Step, seq: int) -> dict[str, Any]:
        if step.action == "backup":
            return self._backup()
        if step.action == "migrate":
            return self._migrate(seq)
        if step.action == "start":
            return self._start(seq)
        if step.action == "gate":
            return self._gate(step, seq)
        if step.action == "shift":
            return self._shift(step, seq)
        return self._promote(step, seq)

    def _backup(self) -> dict[str, Any]:
        p = self.plan
        backup = self.dep.backups.create(reason=f"before release of {p.version}", release_id=self.rid,
                                         kind="release", progress=self.progress)
        detail: dict[str, Any] = {"backup": backup.id}
        if self.dep.pitr is not None:
            # A restore point in the continuous archive too: the release's exact moment, at any size.
            try:
                point = self.dep.pitr.restore_point(f"bluegreen-release-{self.rid}")
            except BluegreenError as exc:
                self.progress(f"no restore point in the archive ({exc.message}); the backup set above stands")
                detail["restore_point_error"] = exc.message
            else:
                self.progress(f"restore point: {point.describe()}")
                detail["restore_point"] = point.to_dict()
        return detail

    def _migrate(self, seq: int) -> dict[str, Any]:
        p = self.plan
        if p.migrate_up:
            self.journal.step_note(self.rid, seq, {"command": "started"})
            self.progress(f"migration command in a one-off {p.image} container: {p.migrate_up}")
            run_migration_command(self.dep, p.image, p.env, p.migrate_up)
            return {"command": "done"}
        assert p.migrations is not None
        db = schema_database(self.dep)
        todo = migrations.pending(db, migrations.load(Path(p.migrations)))
        # Written before anything runs: recovery reads it to know what this release may have applied.
        self.journal.step_note(self.rid, seq, {"to_apply": [m.version for m in todo]})
        applied = []
        for m in todo:
            self.progress(f"migration {m.version}_{m.name}")
            db.run(m, "up")
            applied.append(m.version)
        return {"to_apply": [m.version for m in todo], "applied": applied}

    def _start(self, seq: int) -> dict[str, Any]:
        p = self.plan
        began = time.monotonic()
        stashed = self._stash_warm(seq)
        info = ensure_environment(self.dep, p.to_color, p.image, p.version, self.progress, p.env, reuse="never")
        self.start_seconds = time.monotonic() - began
        current = info or self.dep.runtime.inspect(p.to_color)
        if current is None:
            raise EnvironmentFailed(f"{p.to_color} disappeared right after it started")
        self.dep.state.record_environment(p.to_color, p.image, p.version, current.id, current.port, p.env)
        workers: dict[str, Any] = {}
        if self.dep.workers and self.settings.workers.overlap:  # both colours' workers consume during the steps
            versions, env = self._worker_versions()
            self.dep.workers.start(p.to_color, versions, env, self.progress)
            self.dep.workers.wait_healthy(p.to_color)
            workers = {"workers": "started (overlap)"}
        return {"container": current.id, "seconds": round(self.start_seconds, 3), **stashed, **workers}

    def _stash_warm(self, seq: int) -> dict[str, Any]:
        """The candidate's slot holds the warm previous version: keep it, stopped, for after a failure.

        Written to the journal before it happens, so that a failure, an abort or a crash brings it
        back (recovery.settle) and rollback stays as fast as it was before the release.
        """
        p, dep = self.plan, self.dep
        warm = dep.state.get_doc("warm")
        record = dep.state.environment(p.to_color)
        info = dep.runtime.inspect(p.to_color)
        if warm is None or warm.get("color") != p.to_color or record is None or info is None or not info.running:
            return {}
        note = {"stashed": {"image": record.image, "version": record.version, "env": record.env}}
        self.journal.step_note(self.rid, seq, note)
        dep.proxy.set_standby(None)  # it stops standing by while it is set aside
        self.progress(f"setting {p.to_color} ({record.version}, warm for rollback) aside while {p.version} is tried")
        dep.runtime.stash(p.to_color)
        return note

    # -- the gate, and quality after each step ---------------------------------------------------
    def _clients(self) -> tuple[ModelClient, ModelClient]:
        if self.clients is None:
            c = self.dep.contract
            self.clients = (ModelClient(self.dep.url(self.plan.to_color), c),
                            ModelClient(self.dep.url(self.plan.from_color), c))
        return self.clients

    def _gate(self, step: Step, seq: int) -> dict[str, Any]:
        p, s = self.plan, self.settings
        candidate = self._clients()[0]
        self.holdout = self.dep.holdout
        detail = gate.health(candidate, p.reported_version, s.release.predict_checks, s.release.predict_body,
                             self.holdout,
                             lambda label: self.dep.runtime.image_label(p.image, label))
        replicas = self.dep.replica_urls(p.to_color)[1:]
        for url in replicas:  # every replica reports the version and predicts
            with ModelClient(url, self.dep.contract) as replica:
                gate.health(replica, p.reported_version, max(1, s.release.predict_checks), s.release.predict_body,
                            self.holdout, lambda label: self.dep.runtime.image_label(p.image, label))
        detail["replicas_checked"] = len(replicas) + 1
        self.progress(Event("gate", f"health gate passed: version {detail['version']}, {detail['predict_checks']} "
                            "predictions" + (f" on each of {len(replicas) + 1} replicas" if replicas else ""),
                            release=self.rid, ok=True, version=detail["version"]))
        began = time.monotonic()
        detail["quality"] = self._quality("gate")
        detail["replay"] = self._replay()
        self.quality_seconds += time.monotonic() - began
        detail["quality_seconds"] = round(time.monotonic() - began, 3)
        self._team_checks(step, seq, detail)
        return detail

    def _quality(self, when: str) -> dict[str, Any]:
        """The task's metrics on the holdout, candidate against live; a failure ends the release."""
        if self.holdout is None:
            note = (f"quality gate skipped: the {self.dep.contract.profile} profile has no bundled holdout; "
                    "set analysis.holdout to check model quality")
            if when == "gate":
                self.progress(note)
            return {"skipped": note}
        candidate, live = self._clients()
        report = gate.compare_on_holdout(candidate, live, self.holdout, self.settings.analysis, self.dep.task)
        if when == "gate" or not report.ok:
            self.progress(f"quality on {report.source} ({report.rows} rows, {when}):")
            for line in report.table():
                self.progress(f"  {line}")
        if not report.ok:
            self.failed_detail = {"quality": report.to_dict()}
            raise ReleaseFailed("model quality: " + "; ".join(report.problems()))
        return report.to_dict()

    def _replay(self) -> dict[str, Any]:
        r, s = self.settings.analysis.replay, self.settings
        columns = self.holdout.columns if self.holdout is not None else []
        width = len(columns) if columns else None
        if r.file:
            path = Path(r.file) if Path(r.file).is_absolute() else s.root / r.file
            rows, source = replay.file_rows(path, r.requests, width), str(path)
        else:
            source = "application database"
            rows = replay.recorded_rows(s.database.url, s.sqlite_path, r.requests, width)
        if rows and not columns:
            columns = [f"f{i}" for i in range(len(rows[0]))]
        candidate, live = self._clients()
        report = replay.replay(candidate, live, rows, columns, self.dep.task.task, r.max_difference, source, r.budget)
        self.progress(report.summary())
        if not report.ok:
            self.failed_detail = {"replay": report.to_dict()}
            what = "disagree with" if report.task == "classification" else "differ from"
            raise ReleaseFailed(f"replay: {report.difference:.1%} of the candidate's answers to {report.requests} "
                                f"recorded requests {what} the live model's (limit {report.limit:.0%}, "
                                "analysis.replay.max_difference)")
        return report.to_dict()

    def _shift(self, step: Step, seq: int) -> dict[str, Any]:
        p = self.plan
        assert step.weight is not None
        if self.fast_forward and step.weight < 100:
            return {"skipped": True, "reason": f"promoted by {self.fast_forward}"}
        weights = {p.to_color: step.weight, p.from_color: 100 - step.weight}
        # The step's share reaches the candidate only once the proxy's own check takes it as up:
        # until then it all goes to the serving colour, and the bake would judge no traffic.
        move_traffic(self.dep, weights, self.progress)
        self.dep.state.set_live(p.from_color, weights)
        self.progress(Event("weights", f"{step.name}: {step.weight}% to {p.to_color}" +
                            (f", baking {step.bake:g}s" if step.bake and not self.fast_forward else ""),
                            release=self.rid, step=step.name, weights=weights))
        if self.fast_forward:
            return {"weights": weights, "reason": f"promoted by {self.fast_forward}"}
        check = StepCheck(self.dep, p.to_color, p.from_color)
        before = check.read()
        self._bake(step.bake, check, before)
        after = check.read()
        a = self.settings.analysis
        if a.no_traffic == "pause" and check.user_requests(before, after) < a.min_requests:
            after = self._pause_for_traffic(step, check, before, after)
        result = check.judge(before, after, step.bake, self._probe)
        self.progress(Event("verdict", f"{step.name}: " + "; ".join(result.lines), release=self.rid,
                            step=step.name, ok=result.ok, reasons=result.reasons, detail=result.detail))
        if not result.ok:
            self.failed_detail = result.detail
            raise ReleaseFailed("; ".join(result.reasons))
        result.detail["quality"] = self._quality(step.name)
        detail = {"weights": weights, **result.detail}
        if self.fast_forward and step.checks:
            detail["checks_skipped"] = f"promoted by {self.fast_forward}"  # the remaining steps are skipped
        else:
            self._team_checks(step, seq, detail)
        return detail

    def _bake(self, seconds: float, check: StepCheck | None = None, before: Reading | None = None) -> None:
        """Wait out the bake, answering abort/promote, and fail at once when the evidence is conclusive."""
        began = time.monotonic()
        deadline = began + seconds
        interval = self.settings.analysis.sample_interval
        next_sample = began + interval
        while True:
            self._check_requests()
            if self.fast_forward:
                return
            now = time.monotonic()
            if check is not None and before is not None and now >= next_sample:
                next_sample = now + interval
                reasons = check.watch(before)
                if check.last_sample:
                    self.progress(Event("sample", "", release=self.rid, elapsed_s=round(now - began, 2),
                                        **check.last_sample))
                if reasons:
                    self.bake_seconds += now - began
                    self.failed_detail = {"detected_after_s": round(now - began, 3), "sample": check.last_sample}
                    raise ReleaseFailed("; ".join(reasons) + f" (after {now - began:.1f}s of a {seconds:g}s bake)")
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(POLL, left, max(0.0, next_sample - time.monotonic())))
        self.bake_seconds += seconds

    def _pause_for_traffic(self, step: Step, check: StepCheck, before: Reading, after: Reading) -> Reading:
        """analysis.no_traffic = "pause": wait for enough requests, or for an operator's promote or abort."""
        a = self.settings.analysis
        self.progress(f"{step.name}: paused, inconclusive: {check.user_requests(before, after)} of "
                      f"{a.min_requests} requests; waiting for traffic (or bluegreen promote / bluegreen abort)")
        deadline = time.monotonic() + a.pause_timeout
        while time.monotonic() < deadline:
            self._check_requests()
            after = check.read()
            if self.fast_forward or check.user_requests(before, after) >= a.min_requests:
                return after
            time.sleep(min(1.0, a.sample_interval * 4))
        raise ReleaseFailed(f"{step.name} paused {a.pause_timeout:g}s without {a.min_requests} requests "
                            "(analysis.no_traffic = \"pause\")")

    def _probe(self, n: int) -> tuple[int, int]:
        """Send ``n`` probe requests to the candidate, at most analysis.probe_rate a second: (sent, failed)."""
        candidate = self._clients()[0]
        s = self.settings
        sent = failed = 0
        gap = 1.0 / s.analysis.probe_rate
        for i in range(n):
            began = time.monotonic()
            try:
                if s.release.predict_body:
                    c = candidate.contract
                    status, _ = candidate.call("POST", c.path(c.predict_path), s.release.predict_body.encode(),
                                               probe="step")
                    failed += status != 200
                elif self.holdout is not None:
                    row = self.holdout.x[i % len(self.holdout.x)]
                    candidate.predict([row], self.holdout.columns, probe="step")
                else:
                    break
            except BluegreenError:
                failed += 1
            sent += 1
            time.sleep(max(0.0, gap - (time.monotonic() - began)))
        return sent, failed

    def _check_requests(self) -> None:
        pending = self.journal.pending_request(self.rid)
        if pending is None:
            return
        what, who = pending
        if what == "abort":
            raise _Requested(what, who)
        if what == "promote" and not self.fast_forward:
            self.progress(f"promotion requested by {who}: skipping the remaining steps")
            self.fast_forward = who
        if what == "approve":  # it arrived as the wait it answered ended: nothing waits for it now
            self.journal.clear_request(self.rid, "approve")
            self.progress(f"an approval from {who} came when no approval was awaited: nothing to do")

    def _approval_answer(self) -> tuple[str, str] | None:
        """What an approval check hears: approve (bluegreen promote), reject (bluegreen abort), or nothing.

        A promotion asked for before the wait (the remaining steps skipped) approves it too: whoever
        may promote may approve.
        """
        pending = self.journal.pending_request(self.rid)
        if pending is None:
            return None
        what, who = pending
        if what == "abort":
            return "reject", who
        if what == "promote":
            self._check_requests()  # the promotion itself: the remaining steps are skipped
        return ("approve", who) if what in ("approve", "promote") else None

    def _team_checks(self, step: Step, seq: int, detail: dict[str, Any]) -> None:
        """The team's checks this step names ([[release.checks]]), their results kept in ``detail``."""
        if not step.checks:
            return
        assert self.checks is not None
        results: list[dict[str, Any]] = []
        detail["checks"] = results
        try:
            self.checks.run(step, seq, detail, results)
        except Rejected as exc:
            self.failed_detail = dict(detail)
            raise _Requested("abort", exc.who, f"approval {exc.check} rejected by {exc.who}") from None
        except BaseException:
            self.failed_detail = dict(detail)  # what the checks saw, for the history
            raise

    def _promote(self, step: Step, seq: int) -> dict[str, Any]:
        p = self.plan
        detail: dict[str, Any] = {}
        self._team_checks(step, seq, detail)  # before the switch: the last word on this candidate
        weights = {p.to_color: 100, p.from_color: 0}
        move_traffic(self.dep, weights, self.progress)
        workers = {}
        if self.dep.workers:  # the workers follow the traffic: the old drained, then the new started and proved
            old = current_versions(self.dep, p.from_image)
            versions, env = self._worker_versions()
            workers = self.dep.workers.switch(p.from_color, p.to_color, versions, env, old[0] if old else None,
                                              old[1] if old else None, self.progress)
        window = self.settings.release.warm_window
        self.dep.state.switch_live(
            p.to_color, weights,
            previous={"color": p.from_color, "image": p.from_image, "version": p.from_version, "env": p.from_env},
            warm={"color": p.from_color, "until": time.time() + window})
        self.progress(Event("promoted", f"promoted: {p.to_color} serves {p.version}; {p.from_color} stays warm for "
                            f"{window:g}s", release=self.rid, color=p.to_color, version=p.version))
        self.dep.runtime.discard_stash(p.to_color)  # the version before the previous one: no longer a target
        if window == 0:
            retire(self.dep, force=True, progress=self.progress)
        else:
            self.dep.proxy.set_standby(p.from_color)
        return {"weights": weights, "warm_window": window, **({"workers": workers} if workers else {}), **detail}

    def _worker_versions(self) -> tuple[str | dict[str, str], dict[str, str]]:
        """The workers' versions after this release: the release's tag, or (--only the API) theirs."""
        if self.only is not None:
            kept = current_versions(self.dep, self.plan.from_image)
            if kept is not None:
                return kept
        return tag_of(self.plan.image), self.plan.env


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def release_worker(dep: Deployment, request: ReleaseRequest, progress: Progress = _quiet) -> ReleaseResult:
    """``bluegreen release IMAGE --only WORKER``: one worker service replaced on the live colour at
    the image's tag (drained, started, proved; the old one back on failure). No traffic moves."""
    from bluegreen.orchestrator.core.release import ReleaseResult
    from bluegreen.orchestrator.errors import BluegreenError, InvalidRequest
    from bluegreen.orchestrator.state.journal import Journal

    service = request.only
    assert service is not None
    with dep.lock("release"), dep.state.action(dep.actor, "release", {"image": request.image,
                                                                      "only": service}) as audit:
        live = dep.state.live_color()
        live_record = dep.state.environment(live) if live else None
        current = current_versions(dep, live_record.image if live_record else None)
        if live is None or live_record is None or current is None:
            raise InvalidRequest("nothing is live to release a worker beside", "bluegreen up")
        workers = dep.workers
        old_versions, old_env = expand(current[0], workers.services), current[1]
        tag = tag_of(request.image)
        if old_versions.get(service) == tag:
            raise InvalidRequest(f"{service} already runs {tag} on {live}", "bluegreen status")
        dep.engine.require_image(workers.image(service, tag))
        journal = Journal(dep.state)
        rid = journal.begin("release", dep.actor, workers.image(service, tag), tag, dict(request.env), live, live,
                            workers.image(service, old_versions[service]), old_versions[service], old_env,
                            {"steps": [{"name": "workers"}], "only": service})
        journal.step_started(rid, 0, "workers")
        began = time.monotonic()
        try:
            detail = workers.switch(live, live, {**old_versions, service: tag}, dict(request.env), old_versions,
                                    old_env, progress, only=service)
        except BluegreenError as exc:
            seconds = round(time.monotonic() - began, 3)
            journal.step_finished(rid, 0, "failed", {"error": exc.message})
            journal.finish(rid, "rolled back", exc.message, seconds)
            dep.notify("release_failed", f"release {rid} of {service} {tag} failed: {exc.message}", release=rid)
            raise ReleaseFailed(f"release of {service} {tag} failed: {exc.message}; {live}'s {service} runs "
                                f"{old_versions[service]} again", "bluegreen history --limit 3") from None
        seconds = round(time.monotonic() - began, 3)
        journal.step_finished(rid, 0, "done", detail)
        journal.finish(rid, "promoted", "", seconds)
        audit.notes.append(f"release {rid}: {service} {tag} on {live}")
        return ReleaseResult(rid, "promoted", workers.image(service, tag), tag, live, live, seconds, 0.0, 0.0,
                             [{"name": "workers", "outcome": "done", **detail}])
