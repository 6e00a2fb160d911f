"""The fleet file: the deployments of one host behind one proxy and one ``bluegreen serve``.

Each deployment keeps its own directory and ``bluegreen.toml`` (its settings, state, backups and
history); the fleet file lists them, says how the shared proxy routes a request to each one (by
``Host`` header and/or path prefix), and holds the shared proxy's and serve's own settings.
Standard library only, like the settings cache: ``bluegreen -d fraud rollback`` reads it on the
way to a rollback. Every refusal names the key, the value and the rule.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.errors import ConfigError

FLEET_FILENAME = "fleet.toml"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9*]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")
PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
HINT = "fix the fleet file, or bluegreen fleet init --force writes a commented one   (runbooks/fleet.md)"

FLEET_TEMPLATE = """\
# A fleet: the deployments of this host behind one proxy and one `bluegreen serve`
# (runbooks/fleet.md). Each deployment keeps its own directory and bluegreen.toml; this file lists
# them and says how the shared proxy routes requests to each. `bluegreen fleet add DIR` adds one.

[proxy]
# The one listener every deployment is reached through.
host = "127.0.0.1"
port = 8080
# "container": HAProxy in the bluegreen-proxy container, restarted by the engine if it dies;
# "process": the haproxy binary below, as a daemon on this host.
supervisor = "container"
# HAProxy processes sharing the listener (1 to 4). This proxy is every deployment's single point of
# failure: with 2, a dead process costs only the requests on the connections it held (the kernel
# sends new connections to the other at once) and is restarted with the same weights; with 1,
# every request fails until the supervisor has restarted it (0.3-1 s).
processes = 2
binary = "haproxy"
# Seconds between HAProxy's health checks of each colour, in milliseconds.
check_interval_ms = 1000
# Where the shared proxy keeps its configuration, socket and logs (relative to this file).
directory = ".bluegreen-fleet"

[serve]
# `bluegreen fleet serve`: one API, dashboard and Alertmanager receiver for every deployment.
host = "127.0.0.1"
port = 9900
# The API token: from BLUEGREEN_FLEET_TOKEN, or this file (one line, readable by you only).
token_file = ""

[alerts]
# The alert label that names the deployment an alert is about (its project name).
label = "deployment"

[drills]
# How many deployments may run a rollback drill at once on this host (others queue).
concurrent = 1

# One [[deployment]] per deployment (bluegreen fleet add writes them):
# [[deployment]]
# name = "fraud"            # its project name (bluegreen.toml)
# dir = "fraud"             # its directory, relative to this file
# hosts = ["fraud.example.com"]   # Host headers routed to it (any of them), and/or
# prefix = "/fraud"         # a path prefix routed to it
# strip_prefix = true       # the model server sees /predict, not /fraud/predict
"""


@dataclass(frozen=True)
class FleetProxy:
    host: str = "127.0.0.1"
    port: int = 8080
    supervisor: str = "container"
    processes: int = 2
    binary: str = "haproxy"
    check_interval_ms: int = 1000
    directory: str = ".bluegreen-fleet"


@dataclass(frozen=True)
class FleetServe:
    host: str = "127.0.0.1"
    port: int = 9900
    token_file: str = ""


@dataclass(frozen=True)
class Member:
    """One deployment of the fleet and the route to it."""

    name: str
    dir: str
    hosts: tuple[str, ...] = ()
    prefix: str = ""
    strip_prefix: bool = True

    def routes(self) -> list[tuple[str, str]]:
        """(host or "", prefix or "") pairs that reach this deployment."""
        return [(h, self.prefix) for h in self.hosts] or [("", self.prefix)]

    def describe(self) -> str:
        where = " or ".join(self.hosts) if self.hosts else "any host"
        return f"{where}{' at ' + self.prefix if self.prefix else ''}"


@dataclass(frozen=True)
class Fleet:
    path: Path
    proxy: FleetProxy = FleetProxy()
    serve: FleetServe = FleetServe()
    alert_label: str = "deployment"
    drills_concurrent: int = 1
    members: tuple[Member, ...] = field(default=())

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        """The shared proxy's container is named after the fleet's directory."""
        return "bluegreen-fleet-" + re.sub(r"[^a-z0-9-]", "-", self.root.resolve().name.lower())[:30]

    @property
    def proxy_dir(self) -> Path:
        d = Path(self.proxy.directory)
        return d if d.is_absolute() else self.root / d

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.members) or "none yet"
        raise ConfigError(f"no deployment {name!r} in the fleet {self.path} (it has: {known})",
                          "bluegreen fleet status   (or bluegreen fleet add DIR)")

    def directory(self, member: Member) -> Path:
        d = Path(member.dir)
        return (d if d.is_absolute() else self.root / d).resolve()

    def member_at(self, directory: Path) -> Member | None:
        """The member whose directory this is, if any."""
        here = directory.resolve()
        return next((m for m in self.members if self.directory(m) == here), None)


def find_fleet(explicit: Path | None = None) -> Path:
    """The fleet file: --fleet, else $BLUEGREEN_FLEET, else ~/.config/bluegreen/fleet.toml."""
    if explicit is not None:
        return explicit
    if os.environ.get("BLUEGREEN_FLEET"):
        return Path(os.environ["BLUEGREEN_FLEET"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "bluegreen" / FLEET_FILENAME


def load_fleet(path: Path) -> Fleet:
    """Read and check the fleet file: every refusal names the key, the value and the rule."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no fleet file at {path}", "bluegreen fleet init DIR   (writes one; or pass --fleet FILE, "
                                                      "or set BLUEGREEN_FLEET)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", f"fix the syntax in {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the fleet file {path}: {exc}", "check the file's permissions") from None
    return _parse(data, path)


def parse_text(text: str, path: Path) -> Fleet:
    """A fleet file's text, checked as ``load_fleet`` checks the file (for a change before it is written)."""
    try:
        return _parse(tomllib.loads(text), path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} would not be valid TOML: {exc}", f"fix the syntax in {path}") from None


def _parse(data: dict[str, Any], path: Path) -> Fleet:
    where = path.name
    _known(data, {"proxy", "serve", "alerts", "drills", "deployment"}, "", where)
    proxy = _section(data, "proxy", where)
    _known(proxy, {f for f in FleetProxy.__dataclass_fields__}, "proxy.", where)
    p = FleetProxy(
        host=_ip(proxy.get("host", "127.0.0.1"), "proxy.host", where),
        port=_int(proxy.get("port", 8080), "proxy.port", where, 1, 65535),
        supervisor=_choice(proxy.get("supervisor", "container"), "proxy.supervisor", where, ("container", "process")),
        processes=_int(proxy.get("processes", 2), "proxy.processes", where, 1, 4),
        binary=_str(proxy.get("binary", "haproxy"), "proxy.binary", where),
        check_interval_ms=_int(proxy.get("check_interval_ms", 1000), "proxy.check_interval_ms", where, 100, 60000),
        directory=_str(proxy.get("directory", ".bluegreen-fleet"), "proxy.directory", where))
    serve = _section(data, "serve", where)
    _known(serve, {f for f in FleetServe.__dataclass_fields__}, "serve.", where)
    s = FleetServe(host=_ip(serve.get("host", "127.0.0.1"), "serve.host", where),
                   port=_int(serve.get("port", 9900), "serve.port", where, 1, 65535),
                   token_file=_str(serve.get("token_file", ""), "serve.token_file", where, empty=True))
    alerts = _section(data, "alerts", where)
    _known(alerts, {"label"}, "alerts.", where)
    drills = _section(data, "drills", where)
    _known(drills, {"concurrent"}, "drills.", where)
    raw = data.get("deployment", [])
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise ConfigError(f"invalid fleet file {where}: deployment must be a list of [[deployment]] tables", HINT)
    members = tuple(_member(d, i, where) for i, d in enumerate(raw))
    fleet = Fleet(path=path, proxy=p, serve=s,
                  alert_label=_str(alerts.get("label", "deployment"), "alerts.label", where),
                  drills_concurrent=_int(drills.get("concurrent", 1), "drills.concurrent", where, 1, 100),
                  members=members)
    check_members(fleet)
    return fleet


def _member(d: dict[str, Any], i: int, where: str) -> Member:
    key = f"deployment[{i}]."
    _known(d, {"name", "dir", "hosts", "prefix", "strip_prefix"}, key, where)
    if "name" not in d or "dir" not in d:
        raise ConfigError(f"invalid fleet file {where}: {key[:-1]} needs name and dir", HINT)
    name = _str(d["name"], key + "name", where)
    if not NAME.match(name):
        raise ConfigError(f"invalid fleet file {where}: {key}name = {name!r}: must be a project name (lower-case "
                          "letters, digits, - and _)", HINT)
    hosts = d.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"invalid fleet file {where}: {key}hosts = {hosts!r}: must be a list of host names", HINT)
    for h in hosts:
        if not HOST.match(h.lower()):
            raise ConfigError(f"invalid fleet file {where}: {key}hosts: {h!r} is not a host name (no scheme, port "
                              "or path)", HINT)
    prefix = _str(d.get("prefix", ""), key + "prefix", where, empty=True)
    if prefix and not PREFIX.match(prefix):
        raise ConfigError(f"invalid fleet file {where}: {key}prefix = {prefix!r}: must be a path such as /fraud "
                          "(starting with /, no trailing /, letters, digits and ._~-)", HINT)
    if not hosts and not prefix:
        raise ConfigError(f"invalid fleet file {where}: deployment {name!r} has neither hosts nor prefix, so no "
                          "request would reach it", "give it hosts = [\"…\"] and/or prefix = \"/…\"")
    strip = d.get("strip_prefix", True)
    if not isinstance(strip, bool):
        raise ConfigError(f"invalid fleet file {where}: {key}strip_prefix = {strip!r}: must be true or false", HINT)
    return Member(name=name, dir=_str(d["dir"], key + "dir", where), hosts=tuple(h.lower() for h in hosts),
                  prefix=prefix, strip_prefix=strip)


def check_members(fleet: Fleet) -> None:
    """Names, directories and routes unique across the fleet."""
    seen_names: dict[str, Member] = {}
    seen_dirs: dict[Path, Member] = {}
    seen_routes: dict[tuple[str, str], Member] = {}
    for m in fleet.members:
        if m.name in seen_names:
            raise ConfigError(f"the fleet {fleet.path.name} names deployment {m.name!r} twice", HINT)
        seen_names[m.name] = m
        d = fleet.directory(m)
        if d in seen_dirs:
            raise ConfigError(f"deployments {seen_dirs[d].name!r} and {m.name!r} of {fleet.path.name} share the "
                              f"directory {d}", HINT)
        seen_dirs[d] = m
        for route in m.routes():
            if route in seen_routes:
                host, prefix = route
                what = f"{'host ' + host if host else 'any host'}{' and prefix ' + prefix if prefix else ''}"
                raise ConfigError(f"deployments {seen_routes[route].name!r} and {m.name!r} both claim {what}: a "
                                  "request could not tell them apart", "give one of them another host or prefix   "
                                                                       "(runbooks/fleet.md)")
            seen_routes[route] = m


# -- small checks, each naming the key --------------------------------------------------------
def _section(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"invalid fleet file {where}: {name} must be a [{name}] table", HINT)
    return value


def _known(data: dict[str, Any], keys: set[str], prefix: str, where: str) -> None:
    for key in data:
        if key not in keys:
            raise ConfigError(f"invalid fleet file {where}: unknown key {prefix}{key} (known: "
                              f"{', '.join(sorted(keys))})", HINT)


def _str(value: Any, key: str, where: str, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ConfigError(f"invalid fleet file {where}: {key} = {value!r}: must be a{'' if empty else ' non-empty'} "
                          "string", HINT)
    return value


def _int(value: Any, key: str, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"invalid fleet file {where}: {key} = {value!r}: must be a whole number in {low}..{high}",
                          HINT)
    return value


def _choice(value: Any, key: str, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"invalid fleet file {where}: {key} = {value!r}: must be one of "
                          f"{', '.join(repr(a) for a in allowed)}", HINT)
    return str(value)


def _ip(value: Any, key: str, where: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"invalid fleet file {where}: {key} = {value!r}: must be an IP address such as "
                          "127.0.0.1", HINT) from None
    return str(value)
