"""Plan a release: a pure function from what is observed and what is asked to a list of steps.

Nothing here touches Docker, the proxy or the state: ``--dry-run`` prints the plan, and most
release rules are tested table-driven against this module alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.errors import InvalidRequest
from bluegreen.orchestrator.model.versions import config_changes, config_digest, image_version, version_of
from bluegreen.orchestrator.settings.core import check_steps


@dataclass(frozen=True)
class Observed:
    """What is true before the release: read from the state, the engine and the proxy."""

    live_color: str | None
    live_image: str | None
    live_version: str | None
    live_env: dict[str, str] = field(default_factory=dict)
    live_running: bool = False


@dataclass(frozen=True)
class ReleaseRequest:
    image: str
    version: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    steps: list[int] = field(default_factory=lambda: [10, 25, 50, 100])
    bake: float = 30.0
    migrations: str | None = None  # a directory of NNNN_name.up.sql / .down.sql files
    migrate_up: str | None = None  # or a command run in a one-off container of the image (alembic …)
    migrate_down: str | None = None
    only: str | None = None  # a compose colour: release only this service (the API, or one worker)


@dataclass(frozen=True)
class PlannedCheck:
    """One of the team's own checks ([[release.checks]]), as the plan shows it."""

    name: str
    kind: str  # web | job | approval
    when: tuple[str, ...]  # gate | step | promote
    timeout: float
    what: str  # what it does, in one line


@dataclass(frozen=True)
class Step:
    name: str  # backup, migrate, start, gate, shift-10, …, shift-100, promote
    action: str  # backup | migrate | start | gate | shift | promote
    weight: int | None = None  # the candidate's share of traffic, for shift steps
    bake: float = 0.0
    checks: tuple[str, ...] = ()  # the team's checks run in this step, in order (names)


@dataclass(frozen=True)
class Plan:
    image: str
    version: str
    env: dict[str, str]
    from_color: str
    to_color: str
    from_image: str | None
    from_version: str | None
    from_env: dict[str, str]
    steps: list[Step]
    migrations: str | None = None
    migrate_up: str | None = None
    migrate_down: str | None = None
    image_version: str = ""  # what the image itself reports (a config release adds +cfg.<digest> to version)
    config_changes: dict[str, list[str]] = field(default_factory=dict)  # added/removed/changed keys, never values
    checks: list[PlannedCheck] = field(default_factory=list)

    @property
    def reported_version(self) -> str:
        return self.image_version or self.version

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["env"] = sorted(self.env)  # names only: values may be credentials
        d["from_env"] = sorted(self.from_env)
        return d

    def describe(self) -> list[str]:
        lines = [f"release {self.image} (version {self.version}) into {self.to_color}; "
                 f"{self.from_color} serves {self.from_image} until then"]
        if self.config_changes:
            lines.append("a config release of the live image: " + "; ".join(
                f"{what} {', '.join(keys)}" for what, keys in self.config_changes.items() if keys))
        for i, step in enumerate(self.steps, 1):
            if step.action == "backup":
                what = "snapshot the database and the config files (a backup set); stop here if it fails"
            elif step.action == "migrate" and self.migrations:
                what = f"apply the pending migrations in {self.migrations} (down migrations or the snapshot undo them)"
            elif step.action == "migrate":
                what = f"run `{self.migrate_up}` in a one-off {self.image} container (undone by " + (
                    f"`{self.migrate_down}`" if self.migrate_down else "the snapshot") + ")"
            elif step.action == "start":
                what = f"start {self.to_color} with {self.image} and wait until /health answers 200"
            elif step.action == "gate":
                what = f"health gate: /version reports {self.version}, /predict answers, quality vs {self.from_color}"
            elif step.action == "shift":
                what = (f"shift {step.weight}% of traffic to {self.to_color}, bake {step.bake:g}s, "
                        "check error rate, p95 latency and model quality")
            else:
                what = f"promote {self.to_color}; keep {self.from_color} warm for rollback"
            if step.checks:
                where = "first " if step.action == "promote" else "then "
                what += f"; {where}the checks " + ", ".join(step.checks)
            lines.append(f"{i}. {step.name}: {what}")
        if self.checks:
            lines.append("checks (release.checks; one that fails or outlasts its timeout fails the release):")
            for c in self.checks:
                lines.append(f"   {c.name} ({c.kind}, at {', '.join(WHEN[w] for w in c.when)}; timeout "
                             f"{c.timeout:g}s): {c.what}")
        return lines


WHEN = {"gate": "the gate", "step": "each step", "promote": "promotion"}


def plan_release(observed: Observed, request: ReleaseRequest, checks: Sequence[PlannedCheck] = ()) -> Plan:
    """The steps of a release, or InvalidRequest saying why it cannot be done as asked.

    ``checks`` (the team's, from release.checks) run in the steps their ``when`` names: the gate,
    each traffic step, and promotion (before its switch).
    """
    version = version_of(request.image, request.version)
    if observed.live_color is None or observed.live_image is None:
        raise InvalidRequest("nothing is live to release against", "bluegreen up   (then release)")
    reported, changes = version, {}
    live_base = image_version(observed.live_version or "")
    if version == live_base and request.image == observed.live_image:
        changes = config_changes(observed.live_env, request.env)
        if not changes:
            raise InvalidRequest(f"version {observed.live_version} is already live in {observed.live_color} with "
                                 "these settings", "release another version, or change --env for a config release")
        version = f"{version}+cfg.{config_digest(request.env)}"
    elif version == observed.live_version:
        raise InvalidRequest(f"version {version} is already live in {observed.live_color}",
                             "release another version; bluegreen status shows what runs")
    try:
        steps = check_steps(list(request.steps))
    except ValueError as exc:
        raise InvalidRequest(f"steps {','.join(map(str, request.steps))}: {exc}",
                             "e.g. --steps 10,25,50,100 (increasing, ending at 100)") from None
    if request.bake < 0:
        raise InvalidRequest(f"bake {request.bake:g}s must not be negative", "e.g. --bake 30s")
    to_color = "green" if observed.live_color == "blue" else "blue"
    if request.migrations and request.migrate_up:
        raise InvalidRequest("give either --migrations DIR or --migrate-up COMMAND, not both")
    if request.migrate_down and not request.migrate_up:
        raise InvalidRequest("--migrate-down needs --migrate-up")
    def at(point: str) -> tuple[str, ...]:
        return tuple(c.name for c in checks if point in c.when)

    plan_steps = [Step("backup", "backup")]
    if request.migrations or request.migrate_up:
        plan_steps.append(Step("migrate", "migrate"))
    plan_steps += [Step("start", "start"), Step("gate", "gate", checks=at("gate"))]
    plan_steps += [Step(f"shift-{w}", "shift", w, request.bake, checks=at("step")) for w in steps]
    plan_steps.append(Step("promote", "promote", checks=at("promote")))
    return Plan(image=request.image, version=version, env=dict(request.env), from_color=observed.live_color,
                to_color=to_color, from_image=observed.live_image, from_version=observed.live_version,
                from_env=dict(observed.live_env), steps=plan_steps, migrations=request.migrations,
                migrate_up=request.migrate_up, migrate_down=request.migrate_down, image_version=reported,
                config_changes=changes, checks=list(checks))
