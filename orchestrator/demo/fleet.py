"""``bluegreen demo --fleet``: three deployments on one host behind one proxy and one serve.

In a scratch directory with its own ports: a fleet file and three deployments — fraud (by Host),
churn and ranker (by path prefix) — each v1 on blue behind the fleet's one HAProxy, with steady
traffic to all three through its one listener; each released to v2 under that traffic; then
``bluegreen fleet serve`` and a real Alertmanager (when installed), and an alert about churn
alone: churn goes back to v1 while fraud and ranker stay on v2. The summary counts each
deployment's requests and failures, and the time from the alert to churn's rollback.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.orchestrator.common.ports import free_ports
from bluegreen.orchestrator.demo import alertmanager
from bluegreen.orchestrator.demo.story import Traffic, Watcher
from bluegreen.orchestrator.errors import BluegreenError

ROUTES = {"fraud": (["--host", "fraud.demo.internal"], "", {"Host": "fraud.demo.internal"}),
          "churn": (["--prefix", "/churn"], "/churn", {}),
          "ranker": (["--prefix", "/ranker"], "/ranker", {})}
ALERTED = "churn"


@dataclass
class FleetSummary:
    directory: str
    fleet: str
    proxy_processes: dict[str, int] = field(default_factory=dict)  # the one listener's HAProxy processes
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> requests, failed, live version
    alert_delivery: str = ""
    alert_rollback_ms: float | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def judge(self) -> None:
        for name, d in self.deployments.items():
            if d["failed"]:
                self.problems.append(f"{d['failed']} of {d['requests']:,} requests to {name} failed")
            wanted = "v1" if d["role"] == ALERTED else "v2"
            if d["live"] != wanted:
                self.problems.append(f"{name} serves {d['live']}, not {wanted}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def table(self) -> str:
        lines = [f"{'deployment':<12} {'route':<28} {'requests':>9} {'failed':>7}  live", "-" * 66]
        for name, d in self.deployments.items():
            lines.append(f"{name:<12} {d['route']:<28} {d['requests']:>9,} {d['failed']:>7}  {d['live']}")
        running, of = self.proxy_processes.get("running", 0), self.proxy_processes.get("of", 0)
        lines += ["", f"one proxy for the fleet: one listener, {running} of {of} HAProxy processes running",
                  f"alert about {ALERTED} -> its rollback ({self.alert_delivery}): "
                  + ("-" if self.alert_rollback_ms is None else f"{self.alert_rollback_ms:.0f} ms"),
                  *(f"PROBLEM: {p}" for p in self.problems),
                  f"\n{'all good' if self.ok else 'NOT all good'}: {self.seconds:.0f} s in all"]
        return "\n".join(lines)


class FleetDemo:
    def __init__(self, keep: bool, say: Any) -> None:
        self.keep, self.say = keep, say
        self.began = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="bluegreen-fleet-demo-"))
        self.tag = secrets.token_hex(3)
        ports = free_ports(9)
        self.proxy_port, self.serve_port, self.am_port = ports[:3]
        self.colour_ports = ports[3:]
        self.names = {role: f"{role}-{self.tag}" for role in ROUTES}
        self.path = self.root / "fleet.toml"
        self.token = secrets.token_hex(24)
        self.summary = FleetSummary(str(self.root), str(self.path))
        self.children: list[subprocess.Popen[bytes]] = []
        self.phase = "set-up"

    def log(self, text: str) -> None:
        self.say(f"[fleet demo {time.monotonic() - self.began:5.1f}s] {text}")

    def run_cli(self, *args: str, timeout: float = 300) -> str:
        env = {**os.environ, "BLUEGREEN_FLEET": str(self.path), "BLUEGREEN_ACTOR": "demo"}
        proc = subprocess.run([sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()", *args],
                              cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BluegreenError(f"bluegreen {' '.join(args)} failed: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def set_up(self) -> None:
        from bluegreen.orchestrator.settings.core import default_toml

        self.run_cli("fleet", "init", str(self.path))
        text = self.path.read_text().replace("port = 8080", f"port = {self.proxy_port}").replace(
            "port = 9900", f"port = {self.serve_port}")
        self.path.write_text(text)
        for i, (role, name) in enumerate(self.names.items()):
            directory = self.root / role
            directory.mkdir()
            settings = default_toml()
            for old, new in (('project = "bluegreen"', f'project = "{name}"'),
                             ("port = 8101", f"port = {self.colour_ports[2 * i]}"),
                             ("port = 8102", f"port = {self.colour_ports[2 * i + 1]}"), ('bake = "30s"', 'bake = "2s"'),
                             ("check_interval_ms = 1000", "check_interval_ms = 300"),
                             ("\nrules = []\n", '\nrules = [{ name = "page", match = { severity = "critical" }, '
                                                'action = "rollback" }]\n')):
                if old not in settings:
                    raise BluegreenError(f"the settings template has no {old!r} to set")
                settings = settings.replace(old, new, 1)
            (directory / "bluegreen.toml").write_text(settings)
            self.run_cli("fleet", "add", str(directory), *ROUTES[role][0])
        self.log(f"a fleet of three deployments in {self.root}, one listener on 127.0.0.1:{self.proxy_port}")

    def run(self) -> FleetSummary:
        self.set_up()
        self.phase = "up"
        self.log("bluegreen fleet up: the shared proxy and each deployment's v1 on blue")
        self.run_cli("fleet", "up")
        self.summary.proxy_processes = json.loads(self.run_cli("fleet", "status", "--json"))["proxy_processes"]
        base = f"http://127.0.0.1:{self.proxy_port}"
        traffic = {role: Traffic(base + prefix, lambda: self.phase, lambda: {}, self.began, threads=1,
                                 headers=headers) for role, (_args, prefix, headers) in ROUTES.items()}
        try:
            for role, name in self.names.items():
                self.phase = f"release {role}"
                self.log(f"bluegreen -d {name} release bluegreen-model:v2 (50 -> 100 %), the others serving")
                self.run_cli("-d", name, "release", "bluegreen-model:v2", "--steps", "50,100")
            self.phase = "alert"
            self.alert(base)
        finally:
            for t in traffic.values():
                t.stop()
        routes = {m["name"]: m["route"] for m in json.loads(self.run_cli("fleet", "status", "--json"))["members"]}
        for role, name in self.names.items():
            status = json.loads(self.run_cli("-d", name, "status", "--json"))
            live = status["environments"][status["live"]]["version"] if status["live"] else "-"
            t = traffic[role]
            self.summary.deployments[name] = {"role": role, "route": routes[name], "requests": t.sent,
                                              "failed": t.failed, "live": live, "failures": t.failures[:5]}
        return self.summary

    def start_serve(self) -> None:
        import httpx

        log = open(self.root / "serve.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen([sys.executable, "-c", "from bluegreen.orchestrator.cli import main; main()",
                                 "fleet", "serve"], cwd=self.root, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env={**os.environ, "BLUEGREEN_FLEET": str(self.path),
                                     "BLUEGREEN_FLEET_TOKEN": self.token, "BLUEGREEN_ACTOR": "serve"},
                                start_new_session=True)
        log.close()
        self.children.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.serve_port}/healthz", timeout=1).status_code == 200:
                    self.log(f"bluegreen fleet serve on 127.0.0.1:{self.serve_port}: one API and one Alertmanager "
                             "receiver for all three")
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise BluegreenError(f"bluegreen fleet serve did not start: {(self.root / 'serve.log').read_text()[-500:]}")

    def alert(self, base: str) -> None:
        import httpx

        self.start_serve()
        name = self.names[ALERTED]
        watcher = Watcher(base + ROUTES[ALERTED][1])
        labels = {"alertname": "ModelErrorRateHigh", "severity": "critical", "deployment": name}
        binary = alertmanager.binary()
        try:
            if binary:
                self.summary.alert_delivery = "a real Alertmanager"
                token_file = self.root / ".fleet-token"
                token_file.write_text(self.token)
                token_file.chmod(0o600)
                self.children.append(alertmanager.start(binary, self.root, self.am_port, self.serve_port, token_file,
                                                        ["alertname", "deployment"]))
                self.log(f"an alert about {name} to Alertmanager; it delivers to the fleet's serve")
                t0 = time.monotonic()
                httpx.post(f"http://127.0.0.1:{self.am_port}/api/v2/alerts", json=[{"labels": labels}],
                           timeout=10).raise_for_status()
            else:
                self.summary.alert_delivery = "webhook posted directly: no Alertmanager installed"
                t0 = time.monotonic()
                httpx.post(f"http://127.0.0.1:{self.serve_port}/api/alerts", timeout=60,
                           headers={"Authorization": f"Bearer {self.token}"}, json={
                               "version": "4", "groupKey": "demo", "status": "firing", "receiver": "fleet",
                               "alerts": [{"status": "firing", "labels": labels,
                                           "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                           "fingerprint": secrets.token_hex(8)}]}).raise_for_status()
            settled = watcher.settled_on(t0, "v1")
            self.summary.alert_rollback_ms = None if settled is None else round(settled * 1000, 1)
            if settled is None:
                self.summary.problems.append(f"the alert did not roll {name} back within a minute")
            else:
                self.log(f"  {name} back on v1 after {self.summary.alert_rollback_ms:.0f} ms; the others untouched")
        finally:
            watcher.stop()

    def cleanup(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.keep:
            self.log(f"kept: {self.root} (BLUEGREEN_FLEET={self.path} bluegreen fleet status)")
            return
        try:
            self.run_cli("fleet", "down")
        except BluegreenError as exc:
            self.log(f"fleet down: {exc.message}")
        shutil.rmtree(self.root, ignore_errors=True)


def fleet_demo(keep: bool, say: Any) -> FleetSummary:
    """Play the fleet's story; the summary, whatever happened (a stop part-way is in ``problems``)."""
    d = FleetDemo(keep, say)
    try:
        d.run()
    except BluegreenError as exc:
        d.summary.problems.append(f"the fleet demo stopped during {d.phase}: {exc.message}")
        d.log(f"stopped during {d.phase}: {exc.message}")
    finally:
        d.cleanup()
        d.summary.judge()
        d.summary.seconds = round(time.monotonic() - d.began, 1)
    return d.summary
