"""Alerts from Alertmanager (webhook payload version 4), matched against ``[alerts] rules``.

A firing alert whose labels match a rule acts: ``rollback`` (which aborts a release in progress),
``abort`` (only a release in progress), or ``record``. Resolved alerts and alerts matching no rule
are recorded only. Alertmanager delivers a group again and again while it fires, and retries when
a delivery times out: an alert (its fingerprint and start) acts once, however often it arrives,
and a group of many firing alerts acts once. Every delivery is in the audit log with the alerts'
names, labels and fingerprints.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.core.events import Event, Progress
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError, InvalidRequest
from bluegreen.orchestrator.state.journal import Journal

ACTED = "alerts_acted"  # state doc: the alert keys that already caused an action
KEEP = 5000  # keys remembered
# Deliveries to one deployment decide one after the other; a fleet's deployments decide side by side.
_guard = threading.Lock()
_one_at_a_time: dict[str, threading.Lock] = {}


def _lock_of(dep: Deployment) -> threading.Lock:
    with _guard:
        return _one_at_a_time.setdefault(str(dep.settings.state_dir), threading.Lock())


@dataclass(frozen=True)
class Alert:
    status: str  # firing | resolved
    labels: dict[str, str]
    fingerprint: str
    starts_at: str

    @property
    def key(self) -> str:
        return f"{self.fingerprint}@{self.starts_at}"

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "(no alertname)")


@dataclass
class Outcome:
    received: int
    firing: int
    action: str | None  # rollback | abort | None
    result: str = ""
    matched: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matches(rule_match: dict[str, str], labels: dict[str, str]) -> bool:
    for label, wanted in rule_match.items():
        value = labels.get(label)
        if value is None:
            return False
        if wanted.startswith("~"):
            if re.fullmatch(wanted[1:], value) is None:
                return False
        elif value != wanted:
            return False
    return True


def decide(alerts: list[Alert], rules: list[Any], acted: set[str]) -> tuple[str | None, list[dict[str, Any]]]:
    """The action a delivery calls for (the strongest over its new firing alerts), and each alert's fate."""
    strength = {"record": 0, "abort": 1, "rollback": 2}
    action, fates = None, []
    for alert in alerts:
        rule = next((r for r in rules if matches(dict(r.match), alert.labels)), None)
        wanted = rule.action if rule is not None and alert.status == "firing" else "record"
        repeat = alert.key in acted
        fates.append({"alert": alert.name, "status": alert.status, "fingerprint": alert.fingerprint,
                      "labels": alert.labels, "rule": (rule.name or dict(rule.match)) if rule else None,
                      "action": "record" if repeat else wanted, "repeat": repeat})
        if not repeat and wanted != "record" and (action is None or strength[wanted] > strength[action]):
            action = wanted
    return action, fates


def handle(dep: Deployment, alerts: list[Alert], progress: Progress) -> Outcome:
    """Record a delivery and carry out what it calls for, once."""
    with _lock_of(dep):
        acted = set((dep.state.get_doc(ACTED) or {}).get("keys", []))
        action, fates = decide(alerts, list(dep.settings.alerts.rules), acted)
        outcome = Outcome(len(alerts), sum(a.status == "firing" for a in alerts), action, matched=fates)
        names = sorted({a.name for a in alerts})
        with dep.state.action(dep.actor, "alert", {"alerts": names, "action": action or "record",
                                                   "fingerprints": [a.fingerprint for a in alerts][:20]}) as audit:
            if action is not None:
                # Remembered before acting: a delivery arriving meanwhile, or a retry, does not act again.
                keys = [a.key for a in alerts if a.status == "firing"]
                dep.state.set_doc(ACTED, {"keys": ([*acted, *keys])[-KEEP:]})
                outcome.result = _act(dep, action, names, progress)
            else:
                outcome.result = ("already acted on" if any(f["repeat"] for f in fates)
                                  else "recorded; no rule asks for an action")
            audit.notes.append(f"{', '.join(names)}: {outcome.result}")
        return outcome


def _act(dep: Deployment, action: str, names: list[str], progress: Progress) -> str:
    from bluegreen.orchestrator.core.rollback import request, rollback

    reason = f"alert {', '.join(names)}"
    progress(Event("alert", f"{reason}: {action}", action=action, alerts=names))
    try:
        if action == "abort":
            running = Journal(dep.state).running()
            if running is None or running.kind != "release":
                return "no release in progress to abort"
            rec = request(dep, "abort", progress=progress)
            return f"release {rec.id}: {rec.status}"
        live = dep.state.live_color()
        record = dep.state.environment(live) if live else None
        result = rollback(dep, None, reason, progress=progress, away_from=record.version if record else None)
        if result.id is None:
            return "; ".join(result.notes)
        return f"rolled back: {result.live} serves {result.version} ({result.seconds:.3f}s)"
    except InvalidRequest as exc:
        return f"{action} not possible: {exc.message}"
    except BluegreenError as exc:
        return f"{action} failed: {exc.message}"
