"""A fleet of deployments on one host: join and leave it, bring it up and down, and what is true of each.

Each member is an ordinary deployment (its own settings, state, lock, backups and history), whose
proxy is its backend in the fleet's one HAProxy. A broken member — settings that no longer
validate, a lock held, a colour down — is reported and never stops the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.deployment.bundle import shared_proxy
from bluegreen.orchestrator.errors import BluegreenError, ConfigError, InvalidRequest, ProxyError
from bluegreen.orchestrator.settings.core import COLORS, CONFIG_FILENAME
from bluegreen.orchestrator.settings.fleet import FLEET_TEMPLATE, Fleet, Member, load_fleet, parse_text

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def init(path: Path, force: bool = False) -> Path:
    """Write a commented fleet file (``path`` a file, or a directory to put fleet.toml in)."""
    from bluegreen.orchestrator.settings.fleet import FLEET_FILENAME

    target = path / FLEET_FILENAME if path.is_dir() or not path.suffix else path
    if target.exists() and not force:
        raise InvalidRequest(f"{target} exists already", f"bluegreen --fleet {target} fleet status; or fleet init "
                                                         "--force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(FLEET_TEMPLATE)
    return target


def member_settings(fleet: Fleet, member: Member, validate: bool = False) -> Any:
    """A member's settings (from the cache unless ``validate``); its project must be its fleet name."""
    config = fleet.directory(member) / CONFIG_FILENAME
    if validate:
        from bluegreen.orchestrator.settings.model import load_settings

        settings = load_settings(config)
    else:
        from bluegreen.orchestrator.settings import cache

        settings = cache.load(config)
    if settings.project != member.name:
        raise ConfigError(f"the fleet names {config.parent} {member.name!r}, but its settings say project = "
                          f"{settings.project!r}", f"set project = \"{member.name}\" in {config}, or fleet remove "
                                                   f"{member.name} and fleet add it again")
    return settings


def deployment(fleet: Fleet, member: Member, actor: str | None = None, validate: bool = False) -> Deployment:
    return Deployment(member_settings(fleet, member, validate), actor, (fleet, member))


def ports_of(settings: Any) -> dict[int, str]:
    """Every port a deployment's colours listen on (replicas and extra ports included), and which key says so."""
    out: dict[int, str] = {}
    r = settings.runtime
    for color in COLORS:
        c = settings.environments.color(color)
        for i in range(r.replicas):
            out[c.port + i * r.port_step] = f"environments.{color}.port" + (f" (replica {i + 1})" if i else "")
        for name, port in c.ports.items():
            out[port] = f"environments.{color}.ports.{name}"
    return out


# -- joining and leaving -------------------------------------------------------------------------
@contextlib.contextmanager
def _editing(path: Path) -> Iterator[None]:
    """One change of the fleet file at a time."""
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Joined:
    name: str
    directory: str
    route: str
    url: str
    proxy: str  # what happened to the shared proxy
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add(path: Path, directory: Path, hosts: list[str], prefix: str, strip_prefix: bool = True,
        progress: Progress = _quiet) -> Joined:
    """Add the deployment in ``directory`` to the fleet: checked against every member first (name,
    directory, route, ports), written to the fleet file, and routed at once when the proxy runs."""
    directory = directory.resolve()
    config = directory / CONFIG_FILENAME
    if not config.is_file():
        raise InvalidRequest(f"{directory} has no {CONFIG_FILENAME}: it is not a deployment",
                             f"bluegreen init {directory}   (then set its ports and project)")
    from bluegreen.orchestrator.settings.model import load_settings

    settings = load_settings(config)
    with _editing(path):
        fleet = load_fleet(path)
        name = settings.project
        relative = os.path.relpath(directory, fleet.root)
        member = Member(name=name, dir=relative if not relative.startswith("..") else str(directory),
                        hosts=tuple(h.lower() for h in hosts), prefix=prefix.rstrip("/") if prefix != "/" else prefix,
                        strip_prefix=strip_prefix)
        text = path.read_text() + _block(member)
        grown = parse_text(text, path)  # every rule of the file, with the newcomer in it
        _check_ports(grown, {name: settings})
        path.write_text(text)
    fleet = load_fleet(path)
    member = fleet.member(name)
    dep = Deployment(settings, None, (fleet, member))
    joined = Joined(name, str(directory), member.describe(), dep.proxy_url, "not running: bluegreen fleet up starts it")
    if settings.proxy.driver != "haproxy":
        joined.notes.append(f"its proxy.driver = {settings.proxy.driver!r} is not used while it is in the fleet: the "
                            "fleet's one proxy is HAProxy")
    if settings.proxy.port != fleet.proxy.port and _own_proxy_runs(settings):
        joined.notes.append(f"its own proxy still serves on {settings.proxy.host}:{settings.proxy.port}: stop it "
                            f"(docker rm -f {settings.project}-proxy) once its clients use {dep.proxy_url}")
    if dep.shared_proxy.running():
        live = dep.state.live_color()
        if live is not None:
            weights = dep.state.weights() or {live: 100, "green" if live == "blue" else "blue": 0}
            dep.proxy.start(weights, None)
            joined.proxy = "routed now (a seamless reload of the shared proxy)"
        else:
            joined.proxy = f"routed once it is up: bluegreen -d {name} up"
    progress(f"{name} joined the fleet: {member.describe()} -> {joined.url}")
    return joined


def _own_proxy_runs(settings: Any) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection((settings.proxy.host, settings.proxy.port), 0.2):
        return True
    return False


def _check_ports(fleet: Fleet, known: dict[str, Any]) -> None:
    """No port of a member's colours is another member's, the fleet's listener or its serve's."""
    taken: dict[int, str] = {fleet.proxy.port: "the fleet's proxy.port", fleet.serve.port: "the fleet's serve.port"}
    for m in fleet.members:
        try:
            settings = known.get(m.name) or member_settings(fleet, m)
        except BluegreenError:
            continue  # a broken member is reported by status; it does not block the others
        for port, key in ports_of(settings).items():
            if port in taken:
                raise ConfigError(f"{m.name}'s {key} = {port} is already {taken[port]}: each deployment of a fleet "
                                  "listens on ports of its own", f"change {key} in {fleet.directory(m)}/"
                                                                 f"{CONFIG_FILENAME}")
            taken[port] = f"{m.name}'s {key}"


def _block(m: Member) -> str:
    lines = ["", "[[deployment]]", f"name = {json.dumps(m.name)}", f"dir = {json.dumps(m.dir)}"]
    if m.hosts:
        lines.append(f"hosts = [{', '.join(json.dumps(h) for h in m.hosts)}]")
    if m.prefix:
        lines.append(f"prefix = {json.dumps(m.prefix)}")
        lines.append(f"strip_prefix = {'true' if m.strip_prefix else 'false'}")
    return "\n".join(lines) + "\n"


def remove(path: Path, name: str, progress: Progress = _quiet) -> dict[str, Any]:
    """Take a deployment out of the fleet: its route and backend leave the proxy (a seamless reload),
    its block leaves the fleet file. Its directory, containers, state and backups are untouched."""
    with _editing(path):
        fleet = load_fleet(path)
        member = fleet.member(name)
        text = path.read_text()
        path.write_text(_without(text, name))
        load_fleet(path)  # still a valid file
    unrouted = shared_proxy(load_fleet(path)).remove(name)
    progress(f"{name} left the fleet" + ("; the shared proxy no longer routes to it" if unrouted else ""))
    return {"removed": name, "directory": str(fleet.directory(member)), "unrouted": unrouted,
            "note": f"its containers still run: bluegreen -c {fleet.directory(member)}/{CONFIG_FILENAME} down "
                    "stops them, or up serves it on its own proxy"}


def _without(text: str, name: str) -> str:
    """The fleet file's text without the [[deployment]] block that names ``name`` (comments elsewhere kept)."""
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if line.lstrip().startswith("[")] + [len(lines)]
    for start, end in itertools.pairwise(headers):
        if lines[start].strip() != "[[deployment]]":
            continue
        if any(line.split("#")[0].strip().replace(" ", "") == f"name={json.dumps(name)}" for line in lines[start:end]):
            while start > 0 and not lines[start - 1].strip():
                start -= 1
            return "".join(lines[:start]) + "".join(lines[end:])
    return text


# -- up, down, status -------------------------------------------------------------------------
def up(fleet: Fleet, progress: Progress = _quiet) -> dict[str, Any]:
    """The shared proxy, and every member's live colour behind it; one member failing stops no other."""
    from bluegreen.orchestrator.core.lifecycle import up as up_one

    out: dict[str, Any] = {}
    for m in fleet.members:
        try:
            out[m.name] = up_one(deployment(fleet, m, "fleet"), progress).to_dict()
        except BluegreenError as exc:
            out[m.name] = {"error": exc.message, "hint": exc.hint}
            progress(f"{m.name}: {exc.message}")
    return out


def down(fleet: Fleet, progress: Progress = _quiet) -> dict[str, Any]:
    """Every member's colours stopped, then the shared proxy."""
    from bluegreen.orchestrator.core.lifecycle import down as down_one

    out: dict[str, Any] = {}
    for m in fleet.members:
        try:
            out[m.name] = down_one(deployment(fleet, m, "fleet"), progress).to_dict()
        except BluegreenError as exc:
            out[m.name] = {"error": exc.message, "hint": exc.hint}
    proxy = shared_proxy(fleet)
    if proxy.running():
        proxy.stop()
        out["proxy"] = "stopped"
    return out


@dataclass
class MemberStatus:
    name: str
    route: str
    url: str
    live: str | None = None
    version: str | None = None
    weights: dict[str, int] | None = None
    health: dict[str, str] = field(default_factory=dict)  # the proxy's own check, per colour
    release: str | None = None  # the release or rollback in progress
    standby: str | None = None
    last_drill: str | None = None
    newest_verified_backup: str | None = None
    error: str | None = None  # what makes it unreadable (its settings, its state)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FleetStatus:
    fleet: str
    proxy: str
    proxy_running: bool
    members: list[MemberStatus]
    seconds: float = 0.0
    proxy_processes: dict[str, int] = field(default_factory=dict)  # {"running": n, "of": processes}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Rows = dict[str, dict[str, dict[str, str]]]  # the shared proxy's `show stat`: backend -> server -> row


def proxy_rows(fleet: Fleet) -> tuple[bool, Rows]:
    """Whether the shared proxy runs, and its counters for every deployment, from one ``show stat``."""
    rows: Rows = {}
    if not fleet.members:
        return False, rows
    shared = shared_proxy(fleet)
    running = shared.running()
    if running:
        with contextlib.suppress(ProxyError):
            text = shared.command("show stat")
            lines = [line for line in text.splitlines() if line]
            header = lines[0][2:].split(",")
            for line in lines[1:]:
                row = dict(zip(header, line.split(","), strict=False))
                rows.setdefault(row.get("pxname", ""), {})[row.get("svname", "")] = row
    return running, rows


def timings_dumps(fleet: Fleet) -> dict[int, str]:
    """Each running process's ring of request timings (every deployment's requests, each line naming its
    backend), by process number: a process times the requests it forwarded."""
    from bluegreen.orchestrator.proxy.timings import RING

    out = {}
    for process in shared_proxy(fleet).processes.answering():
        with contextlib.suppress(ProxyError):
            out[process.number] = process.command(f"show events {RING}")
    return out


def backend_rows(rows: Rows, name: str) -> dict[str, dict[str, str]]:
    """One deployment's rows of ``show stat``: its servers, and the backend's own ("BACKEND")."""
    return rows.get(f"be_{name}", {})


def member_status(m: Member, dep: Deployment, rows: Rows, journal: bool = True) -> MemberStatus:
    """One line of ``fleet status`` for the member ``dep`` is; without ``journal``, not its last drill
    and backup (the dearer part of the reading)."""
    from bluegreen.orchestrator.state.journal import Journal

    s = MemberStatus(m.name, m.describe(), "")
    try:
        s.url = dep.proxy_url
        s.live = dep.state.live_color()
        record = dep.state.environment(s.live) if s.live else None
        s.version = record.version if record else None
        servers = backend_rows(rows, m.name)
        if servers:
            s.weights = {c: int(servers[c].get("weight") or 0) for c in COLORS if c in servers}
            s.health = {c: servers[c].get("status", "") for c in COLORS if c in servers}
            s.standby = next((c for c in COLORS if f"{c}-standby" in servers
                              and servers[f"{c}-standby"].get("status") != "MAINT"), None)
        log = Journal(dep.state)
        current = log.running()
        if current is not None:
            s.release = f"{current.kind} {current.id} of {current.version}: {current.step}"
        if journal:
            drill = next((r for r in log.recent(50) if r.kind == "drill"), None)
            if drill is not None:
                s.last_drill = f"{drill.status} {drill.started_at}"
            verified = next((b for b in dep.backups.all_sets()[:20] if b.verified_at), None)
            s.newest_verified_backup = verified.id if verified else None
    except BluegreenError as exc:
        s.error = exc.message
    return s


def status(fleet: Fleet) -> FleetStatus:
    """One line per member, from one read of the shared proxy and each member's own state."""
    began = time.monotonic()
    proxy_running, rows = proxy_rows(fleet)
    processes = {"running": len(shared_proxy(fleet).processes.running()) if fleet.members else 0,
                 "of": fleet.proxy.processes}
    out = []
    for m in fleet.members:
        try:
            dep = deployment(fleet, m, "fleet")
        except BluegreenError as exc:
            out.append(MemberStatus(m.name, m.describe(), "", error=exc.message))
            continue
        out.append(member_status(m, dep, rows))
    return FleetStatus(str(fleet.path), f"haproxy on {fleet.proxy.host}:{fleet.proxy.port}", proxy_running, out,
                       round(time.monotonic() - began, 3), processes)
