"""What is true right now: read from the proxy, the engine and the colours, not from memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import BluegreenError, ProxyError
from bluegreen.orchestrator.settings.core import COLORS
from bluegreen.orchestrator.state.journal import Journal
from bluegreen.orchestrator.state.lock import current_holder


@dataclass
class ColorStatus:
    color: str
    url: str
    image: str | None = None
    version: str | None = None
    container: str = "absent"  # absent, running, exited, …
    container_id: str | None = None
    healthy: bool = False
    health: str = "not checked"


@dataclass
class Status:
    project: str
    live: str | None
    proxy_driver: str
    proxy_url: str
    proxy_running: bool
    weights: dict[str, int] | None  # read back from the proxy; None when it is not running
    recorded_weights: dict[str, int]
    lock: str | None
    environments: dict[str, ColorStatus] = field(default_factory=dict)
    proxy_error: str | None = None
    release: dict[str, Any] | None = None  # the release or rollback in progress (or cut short)
    warm: dict[str, Any] | None = None  # the previous colour kept running, and until when (only if it truly is)
    standby: str | None = None  # the colour the proxy fails over to, read from the proxy
    archive: dict[str, Any] | None = None  # the continuous archive (backups.pitr), when on
    workers: dict[str, list[dict[str, Any]]] | None = None  # each colour's workers (environments.with)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(dep: Deployment) -> Status:
    proxy = dep.proxy
    running = proxy.running()
    weights = None
    proxy_error = None
    standby = None
    stopped: list[str] = []
    if running:
        try:
            weights = proxy.weights()
            standby = proxy.standby()
        except ProxyError as exc:
            proxy_error = exc.message
        stopped = proxy.stopped_processes()
    holder = current_holder(dep.settings.state_dir / "lock")
    result = Status(
        project=dep.settings.project,
        live=dep.state.live_color(),
        proxy_driver=proxy.name,
        proxy_url=dep.proxy_url,
        proxy_running=running,
        weights=weights,
        recorded_weights=dep.state.weights(),
        lock=holder.describe() if holder else None,
        proxy_error=proxy_error,
        warm=dep.state.get_doc("warm"),
        standby=standby,
    )
    if stopped:
        result.notes.append(f"{', '.join(stopped)} not running: the other serves all the traffic; "
                            "bluegreen up starts it (runbooks/failover.md)")
    current = Journal(dep.state).running()
    if current is not None:
        result.release = {"id": current.id, "kind": current.kind, "version": current.version,
                          "to": current.to_color, "step": current.step, "pid": current.pid,
                          "interrupted": holder is None, "awaiting_approval": current.awaiting()}
    for color in COLORS:
        cs = ColorStatus(color=color, url=dep.url(color))
        info = dep.runtime.inspect(color)
        if info is not None:
            cs.image, cs.version, cs.container, cs.container_id = info.image, info.version, info.state, info.id
            if info.running:
                p = dep.probe(color, timeout=0.5)
                cs.healthy = p.healthy
                cs.health = "healthy" if p.healthy else (p.error or "unhealthy")
            else:
                cs.health = f"exited ({info.exit_code})" if info.exit_code is not None else info.state
        result.environments[color] = cs
    warm = result.warm
    if warm is not None and warm.get("color") != result.live:
        cs = result.environments[str(warm["color"])]
        if not cs.healthy:  # "warm" only when it runs and answers: otherwise a rollback is a cold start
            result.notes.append(f"{warm['color']} was to stay warm for rollback, but its container is "
                                f"{cs.container} ({cs.health}): a rollback starts it first")
            result.warm = None
    if dep.settings.environments.with_:
        try:
            result.workers = {c: [w.to_dict() for w in dep.workers.state(c)] for c in ("blue", "green")}
        except BluegreenError as exc:
            result.notes.append(f"the workers cannot be read: {exc.message}")
        else:
            for c, states in result.workers.items():
                bad = [w for w in states if w["state"] not in ("running", "absent") or w["health"] == "unhealthy"]
                if bad:
                    result.notes.append(f"{c}'s {bad[0]['service']} is {bad[0]['state']} ({bad[0]['health']})")
    if dep.pitr is not None:
        tool = dep.pitr.tool
        try:
            result.archive = dep.pitr.state()
        except BluegreenError as exc:
            result.archive = {"tool": tool, "running": False, "error": exc.message}
        if tool == "pgbackrest" and not result.archive.get("running"):
            failed = result.archive.get("last_failed_wal")
            result.notes.append("PostgreSQL is not archiving to pgBackRest" + (
                f" (archive_command failed on {failed} at {result.archive.get('last_failed_time')})" if failed else
                f": {result.archive.get('error', 'archive_mode is off')}") + ": the recoverable window stops "
                "growing and releases fall back to full sets; runbooks/pitr.md")
        elif not result.archive.get("running"):
            result.notes.append("the continuous archive (litestream) is not running: writes from now on cannot be "
                                "restored to a point in time; bluegreen up starts it")
        elif (result.archive.get("pending_transactions") or 0) > 0:
            result.notes.append(f"{result.archive['pending_transactions']} committed transactions are not archived "
                                "yet (Litestream ships every second; more than that is lag: check its log)")
    live = result.environments.get(result.live or "")
    if live is not None and not live.healthy and standby is not None:
        result.notes.append(f"{result.live} does not answer ({live.health}); the proxy sends its traffic to the "
                            f"standby {standby}. The next bluegreen command makes that official.")
    return result
