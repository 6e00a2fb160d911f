"""A fleet on one host: three deployments behind one real HAProxy, routed by host and by path prefix.

One fleet (its proxy and three deployments' colours) is shared by the tests of this module; each
test leaves it serving v1 everywhere. Commands run through the real CLI with ``-d`` from another
directory; traffic goes through the fleet's one listener.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bluegreen.orchestrator.proxy.base import process_alive
from bluegreen.orchestrator.proxy.instances import runtime_command, socket_path
from tests.conftest import BLUEGREEN, REPO, Connection, Result, Traffic, free_ports, wait_for
from tests.serving import LOGS, TOKEN, alertmanager_payload, stop

IRIS = {"features": [5.1, 3.5, 1.4, 0.2]}


@dataclass
class Fleet:
    root: Path
    path: Path
    port: int
    names: dict[str, str] = field(default_factory=dict)  # role -> project name
    ports: list[int] = field(default_factory=list)

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 180, env: dict[str, str] | None = None
            ) -> Result:
        full = {**os.environ, "BLUEGREEN_FLEET": str(self.path), "BLUEGREEN_ACTOR": "fleet-test", **(env or {})}
        proc = subprocess.run([*BLUEGREEN, *args], cwd=cwd or self.root.parent, env=full, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def predict(self, path: str = "/predict", host: str | None = None) -> httpx.Response:
        headers = {"Host": host} if host else {}
        return httpx.post(f"{self.url}{path}", json=IRIS, headers=headers, timeout=10)


def write_deployment(directory: Path, name: str, blue: int, green: int) -> None:
    directory.mkdir(parents=True)
    text = (REPO / "orchestrator" / "settings" / "default.toml").read_text()
    for old, new in (('project = "bluegreen"', f'project = "{name}"'), ("port = 8101", f"port = {blue}"),
                     ("port = 8102", f"port = {green}"), ("check_interval_ms = 1000", "check_interval_ms = 300"),
                     ('bake = "30s"', 'bake = "0.3s"'), ('watch = "5s"', 'watch = "1s"'),
                     ("\nrules = []\n", '\nrules = [{ match = { severity = "critical" }, action = "rollback" }]\n')):
        text = text.replace(old, new)
    (directory / "bluegreen.toml").write_text(text)


def cleanup(names: list[str], fleet_path: Path | None = None) -> None:
    """Remove the deployments' containers, and (given its fleet file) the fleet's proxy."""
    for name in names:
        listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={name}"],
                                capture_output=True, text=True)
        if listed.stdout.split():
            subprocess.run(["docker", "rm", "-f", *listed.stdout.split()], capture_output=True)
    for pid_file in ("haproxy.pid", "haproxy-2.pid") if fleet_path else ():
        pid = fleet_path.parent / ".bluegreen-fleet" / pid_file
        if pid.exists():
            subprocess.run(["kill", pid.read_text().split()[0]], capture_output=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Fleet]:
    """fraud (by host), churn (by prefix) and ranker (by host and prefix) behind one HAProxy."""
    root = tmp_path_factory.mktemp("fleet") / "host"
    root.mkdir()
    tag = uuid.uuid4().hex[:6]
    ports = free_ports(10)
    f = Fleet(root, root / "fleet.toml", ports[0], ports=ports)  # its proxy: two processes (the default)
    f.names = {"fraud": f"fraud{tag}", "churn": f"churn{tag}", "ranker": f"ranker{tag}"}
    init = f.run("fleet", "init", str(f.path))
    assert init.code == 0, init.err
    text = f.path.read_text().replace("port = 8080", f"port = {f.port}").replace("port = 9900", f"port = {ports[1]}")
    f.path.write_text(text.replace('supervisor = "container"', 'supervisor = "process"'))
    for i, (role, name) in enumerate(f.names.items()):
        write_deployment(root / role, name, ports[2 + 2 * i], ports[3 + 2 * i])
    routes = {"fraud": ["--host", "fraud.example.com"], "churn": ["--prefix", "/churn"],
              "ranker": ["--host", "ml.example.com", "--prefix", "/ranker"]}
    try:
        for role, args in routes.items():
            added = f.run("fleet", "add", str(root / role), *args)
            assert added.code == 0, added.err
        up = f.run("fleet", "up", timeout=300)
        assert up.code == 0, (up.out, up.err)
        yield f
    finally:
        f.run("fleet", "down", timeout=300)
        cleanup(list(f.names.values()), f.path)


def test_each_request_reaches_its_deployment_by_host_or_prefix_and_nothing_else(fleet: Fleet) -> None:
    """Host routes, prefix routes (the model servers see /predict), host and prefix together, and a
    request no route claims: 404 naming it."""
    by_host = fleet.predict(host="fraud.example.com")
    assert by_host.status_code == 200 and by_host.json()["model_version"] == "v1"
    assert fleet.predict(host="FRAUD.example.com:8080").status_code == 200  # case and port do not matter
    assert fleet.predict("/churn/predict").status_code == 200
    assert fleet.predict("/churnx/predict").status_code == 404  # a prefix is a path segment
    assert fleet.predict("/ranker/predict", host="ml.example.com").status_code == 200
    assert fleet.predict("/ranker/predict").status_code == 404  # the prefix without its host: not ranker's
    assert fleet.predict("/predict", host="ml.example.com").status_code == 404  # the host without its prefix
    unrouted = fleet.predict("/nothing", host="other.example.com")
    assert unrouted.status_code == 404
    assert unrouted.text == "no deployment of this fleet serves host other.example.com path /nothing\n"


def test_one_deployment_releases_while_another_rolls_back_and_the_third_loses_nothing(fleet: Fleet) -> None:
    """-d from any directory; concurrent operations on two deployments; traffic to all three through the
    one listener throughout: not one failed request anywhere."""
    fraud, churn, ranker = fleet.names["fraud"], fleet.names["churn"], fleet.names["ranker"]
    first = fleet.run("-d", churn, "release", "bluegreen-model:v2", "--steps", "100")
    assert first.code == 0, first.err
    loads = {"fraud": Traffic(fleet.url, headers={"Host": "fraud.example.com"}),
             "churn": Traffic(f"{fleet.url}/churn"),
             "ranker": Traffic(f"{fleet.url}/ranker", headers={"Host": "ml.example.com"})}
    results: dict[str, Result] = {}

    def act(key: str, *args: str) -> None:
        results[key] = fleet.run(*args)

    threads = [threading.Thread(target=act, args=("release", "-d", fraud, "release", "bluegreen-model:v2", "--steps",
                                                  "50,100")),
               threading.Thread(target=act, args=("rollback", "-d", churn, "rollback"))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        for load in loads.values():
            load.stop()
    assert results["release"].code == 0, results["release"].err
    assert results["rollback"].code == 0, results["rollback"].err
    assert {k: v.failed for k, v in loads.items()} == {"fraud": 0, "churn": 0, "ranker": 0}
    assert all(v.sent > 20 for v in loads.values())
    assert "v2" in loads["fraud"].versions and set(loads["churn"].versions) <= {"v1", "v2"}
    status = json.loads(fleet.run("fleet", "status", "--json").out)
    versions = {m["name"]: m["version"] for m in status["members"]}
    assert versions == {fraud: "v2", churn: "v1", ranker: "v1"}
    assert fleet.run("-d", fraud, "rollback").code == 0
    assert fleet.predict(host="fraud.example.com").json()["model_version"] == "v1"


def test_a_deployment_joins_the_running_fleet_with_no_request_lost_elsewhere(fleet: Fleet) -> None:
    """fleet add routes a fourth deployment at once (a seamless reload); the others' traffic sees nothing.
    It keeps its prefix: its model server gets /late/predict as sent, and answers its own 404."""
    name = f"late{uuid.uuid4().hex[:6]}"
    directory = fleet.root / "late"
    write_deployment(directory, name, fleet.ports[8], fleet.ports[9])
    loads = [Traffic(fleet.url, headers={"Host": "fraud.example.com"}), Traffic(f"{fleet.url}/churn")]
    try:
        wait_for(lambda: all(load.sent > 10 for load in loads), timeout=10)
        added = fleet.run("fleet", "add", str(directory), "--prefix", "/late", "--keep-prefix")
        assert added.code == 0, added.err
        up = fleet.run("-d", name, "up")
        assert up.code == 0, up.err
        kept = fleet.predict("/late/predict")
        assert (kept.status_code, kept.json()) == (404, {"error": "no route POST /late/predict"})  # the server's own
        removed = fleet.run("fleet", "remove", name)
        assert removed.code == 0, removed.err
        assert fleet.predict("/late/predict").status_code == 404
    finally:
        for load in loads:
            load.stop()
        subprocess.run([*BLUEGREEN, "down"], cwd=directory, capture_output=True, env={**os.environ,
                       "BLUEGREEN_FLEET": str(fleet.path)})
        cleanup([name])
    assert [load.failed for load in loads] == [0, 0] and all(load.sent > 10 for load in loads)


def test_a_broken_deployment_is_reported_and_the_others_keep_serving(fleet: Fleet) -> None:
    settings = fleet.root / "ranker" / "bluegreen.toml"
    good = settings.read_text()
    settings.write_text(good.replace("[proxy]", "[proxy]\nbogus = 1", 1))
    try:
        status = fleet.run("fleet", "status", "--json")
        assert status.code == 0, status.err
        rows = {m["name"]: m for m in json.loads(status.out)["members"]}
        assert "unknown key proxy.bogus" in rows[fleet.names["ranker"]]["error"]
        assert rows[fleet.names["fraud"]]["error"] is None and rows[fleet.names["fraud"]]["live"] == "blue"
        broken = fleet.run("-d", fleet.names["ranker"], "status")
        assert broken.code == 4 and "unknown key proxy.bogus" in broken.err
        assert fleet.predict(host="fraud.example.com").status_code == 200
        assert fleet.predict("/ranker/predict", host="ml.example.com").status_code == 200  # its server still runs
    finally:
        settings.write_text(good)


def test_bad_input_is_refused_by_name_and_changes_nothing(fleet: Fleet, tmp_path: Path) -> None:
    before = fleet.path.read_text()
    unknown = fleet.run("-d", "nobody", "status")
    assert unknown.code == 4
    assert unknown.err.startswith(f"Error: no deployment 'nobody' in the fleet {fleet.path} (it has: ")
    clash = tmp_path / "clash"
    write_deployment(clash, f"clash{uuid.uuid4().hex[:6]}", *free_ports(2))
    same_route = fleet.run("fleet", "add", str(clash), "--host", "fraud.example.com")
    assert same_route.code == 4 and "both claim host fraud.example.com" in same_route.err
    fraud_ports = fleet.root / "fraud" / "bluegreen.toml"
    same_port = tmp_path / "ports"
    write_deployment(same_port, f"ports{uuid.uuid4().hex[:6]}", fleet.ports[2], free_ports(1)[0])
    taken = fleet.run("fleet", "add", str(same_port), "--prefix", "/ports")
    assert taken.code == 4 and f"environments.blue.port = {fleet.ports[2]} is already" in taken.err
    twin = tmp_path / "twin"
    write_deployment(twin, fleet.names["fraud"], *free_ports(2))
    named = fleet.run("fleet", "add", str(twin), "--prefix", "/twin")
    assert named.code == 4 and f"names deployment {fleet.names['fraud']!r} twice" in named.err
    missing = fleet.run("fleet", "add", str(tmp_path / "nowhere"), "--prefix", "/x")
    assert missing.code == 2 and "has no bluegreen.toml" in missing.err
    no_route = fleet.run("fleet", "add", str(clash))
    assert no_route.code == 4 and "has neither hosts nor prefix" in no_route.err
    assert fleet.path.read_text() == before and fraud_ports.exists()
    assert fleet.predict(host="fraud.example.com").status_code == 200


def held_by_process(fleet: Fleet, number: int, backend: str) -> tuple[dict[str, int], str | None]:
    """One process's weights and standby for a backend, from that process's own runtime socket."""
    sock = socket_path(fleet.root / ".bluegreen-fleet", number)
    weights = {c: int(runtime_command(sock, f"get weight {backend}/{c}").split()[0]) for c in ("blue", "green")}
    header, *lines = runtime_command(sock, "show stat").splitlines()
    rows = [dict(zip(header[2:].split(","), line.split(","), strict=False)) for line in lines]
    standby = next((row["svname"][: -len("-standby")] for row in rows if row.get("pxname") == backend
                    and row["svname"].endswith("-standby") and row["status"] != "MAINT"), None)
    return weights, standby


def test_a_killed_proxy_process_costs_at_most_one_request_per_connection_and_fleet_up_brings_it_back_in_line(
        fleet: Fleet) -> None:
    """The fleet's proxy runs two HAProxy processes on its one listener (the default). kill -9 of one's
    worker (its master leaves with it): each client connection loses at most the request in flight on
    it, and every deployment's traffic goes on through the other process while the killed one stays
    dead (the process supervisor restarts nothing). A release made meanwhile is saved, and reaches the
    killed process when fleet up starts it again."""
    proxy_dir = fleet.root / ".bluegreen-fleet"
    master = int((proxy_dir / "haproxy.pid").read_text().split()[0])
    [worker] = [int(p) for p in subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                               text=True).stdout.split()]
    churn = fleet.names["churn"]
    gone = threading.Event()
    connections = ([Connection(f"{fleet.url}/version", {"Host": "fraud.example.com"}, gone) for _ in range(3)]
                   + [Connection(f"{fleet.url}/churn/version", reconnect=gone) for _ in range(3)])
    try:
        assert wait_for(lambda: all(len(c.ok) >= 5 for c in connections), timeout=20)
        os.kill(worker, signal.SIGKILL)
        t_kill = time.monotonic()
        assert wait_for(lambda: not process_alive(worker) and not process_alive(master), timeout=10)
        gone.set()
        assert wait_for(lambda: all(c.ok_since(t_kill) >= 20 for c in connections), timeout=30)
        assert not process_alive(master)  # what served since the kill was the other process
        status = json.loads(fleet.run("fleet", "status", "--json").out)
        assert (status["proxy_running"], status["proxy_processes"]) == (True, {"running": 1, "of": 2})
        released = fleet.run("-d", churn, "release", "bluegreen-model:v2", "--steps", "100")
        assert released.code == 0, released.err
        up = fleet.run("fleet", "up")
        assert up.code == 0, up.err
        t_up = time.monotonic()
        assert json.loads(fleet.run("fleet", "status", "--json").out)["proxy_processes"] == {"running": 2, "of": 2}
        assert wait_for(lambda: all(c.ok_since(t_up) >= 5 for c in connections), timeout=10)
    finally:
        for c in connections:
            c.stop()
    failures = [[(round(t - t_kill, 3), why) for t, why in c.why] for c in connections]
    assert all(len(f) <= 1 for f in failures), failures
    for backend in (f"be_{churn}", f"be_{fleet.names['fraud']}"):
        assert held_by_process(fleet, 1, backend) == held_by_process(fleet, 2, backend)
    assert held_by_process(fleet, 1, f"be_{churn}") == ({"blue": 0, "green": 100}, "blue")
    assert fleet.run("-d", churn, "rollback").code == 0


# -- one serve for the fleet ----------------------------------------------------------------------
def start_fleet_serve(fleet: Fleet, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    log = fleet.root / f"fleet-serve-{port}.log"
    out = open(log, "w")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen([*BLUEGREEN, "fleet", "serve", "--port", str(port)], cwd=fleet.root.parent,
                            env={**os.environ, "BLUEGREEN_FLEET": str(fleet.path), "BLUEGREEN_FLEET_TOKEN": TOKEN,
                                 **(env or {})}, stdout=out, stderr=subprocess.STDOUT, text=True)
    LOGS[proc.pid] = out

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    assert wait_for(up, timeout=60) and proc.poll() is None, log.read_text()
    return proc


@dataclass
class FleetServe:
    url: str
    proc: subprocess.Popen[str]

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                             **kwargs)

    def live(self, name: str) -> tuple[str, str]:
        s = self.call("GET", f"/api/deployments/{name}/status").json()
        return s["live"], s["environments"][s["live"]]["version"]


@pytest.fixture(scope="module")
def fleet_serve(fleet: Fleet) -> Iterator[FleetServe]:
    proc = start_fleet_serve(fleet, fleet.ports[1])
    try:
        yield FleetServe(f"http://127.0.0.1:{fleet.ports[1]}", proc)
    finally:
        stop(proc)


def test_one_serve_answers_for_every_deployment_by_name(fleet: Fleet, fleet_serve: FleetServe) -> None:
    listed = fleet_serve.call("GET", "/api/deployments").json()
    assert [(d["name"], d["served"]) for d in listed] == [(n, True) for n in fleet.names.values()]
    churn = fleet.names["churn"]
    status = fleet_serve.call("GET", f"/api/deployments/{churn}/status").json()
    assert status.get("project") == churn, status
    assert status["proxy_url"] == f"{fleet.url}/churn"
    unknown = fleet_serve.call("GET", "/api/deployments/nobody/status")
    assert unknown.status_code == 404 and unknown.json()["message"].startswith("no deployment 'nobody' in the fleet")
    unnamed = fleet_serve.call("POST", "/api/rollback", json={})
    assert unnamed.status_code == 400 and "name the deployment, /api/deployments/NAME/rollback" in \
        unnamed.json()["message"]
    assert httpx.get(f"{fleet_serve.url}/api/deployments", timeout=10).status_code == 401
    metrics = httpx.get(f"{fleet_serve.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    types = [line.split()[2] for line in metrics.text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))  # each family once, with every deployment's samples
    for name in fleet.names.values():
        labels = f'deployment="{name}",project="{name}"'
        assert f"bluegreen_deployment_up{{{labels}}} 1.0" in metrics.text, metrics.text
        assert f"bluegreen_proxy_up{{{labels}}} 1.0" in metrics.text, metrics.text  # its backend in the shared proxy
        assert sum(f'bluegreen_live{{colour="{c}",{labels}}} 1.0' in metrics.text for c in ("blue", "green")) == 1


def test_an_alert_delivered_by_a_real_alertmanager_rolls_back_exactly_the_deployment_it_names(
        fleet: Fleet, fleet_serve: FleetServe, tmp_path: Path) -> None:
    """Two deployments on v2; Alertmanager delivers alerts labelled for one of them and for a deployment
    the fleet does not have: the first rolls back, the other stays on v2, the stranger acts on nothing,
    and traffic to every deployment loses nothing."""
    fraud, churn = fleet.names["fraud"], fleet.names["churn"]
    for name in (fraud, churn):
        assert fleet.run("-d", name, "release", "bluegreen-model:v2", "--steps", "100").code == 0
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager is required (scripts/provision.sh installs it)")
    (am_port,) = free_ports(1)
    config = tmp_path / "alertmanager.yml"
    config.write_text(json.dumps({
        "route": {"receiver": "fleet", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "fleet", "webhook_configs": [{
            "url": f"{fleet_serve.url}/api/alerts", "http_config": {"authorization": {"type": "Bearer",
                                                                                      "credentials": TOKEN}}}]}]}))
    am = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
                           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loads = [Traffic(fleet.url, headers={"Host": "fraud.example.com"}), Traffic(f"{fleet.url}/churn"),
             Traffic(f"{fleet.url}/ranker", headers={"Host": "ml.example.com"})]
    try:
        am_url = f"http://127.0.0.1:{am_port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{am_url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(ready, timeout=30), "alertmanager did not become ready"
        httpx.post(f"{am_url}/api/v2/alerts", timeout=10, json=[
            {"labels": {"alertname": "ModelErrors", "severity": "critical", "deployment": fraud}},
            {"labels": {"alertname": "ModelErrors", "severity": "critical", "deployment": "stranger"}},
        ]).raise_for_status()
        assert wait_for(lambda: fleet_serve.live(fraud) == ("blue", "v1"), timeout=30, interval=0.1)
        # With group_wait 0s Alertmanager may flush the group before the second alert is in it: that one
        # comes a group_interval later.
        assert wait_for(lambda: any(e["kind"] == "alert" and e.get("value") == "stranger" and "not in the fleet"
                                    in e["text"] for e in fleet_serve.call("GET", "/api/events").json()), timeout=15)
        fraud_only = fleet_serve.call("GET", f"/api/events?deployment={fraud}").json()
        assert fraud_only and {e["deployment"] for e in fraud_only} == {fraud}
    finally:
        am.terminate()
        am.wait(timeout=15)
        for load in loads:
            load.stop()
    assert fleet_serve.live(churn) == ("green", "v2")  # not named: untouched
    assert [load.failed for load in loads] == [0, 0, 0]
    audit = fleet_serve.call("GET", f"/api/deployments/{churn}/history").json()["audit"]
    assert not any(e["action"] == "alert" for e in audit)
    assert fleet.run("-d", churn, "rollback").code == 0


def test_direct_alerts_for_every_deployment_roll_each_back_at_once(fleet: Fleet, fleet_serve: FleetServe) -> None:
    """One delivery naming all three deployments: each rolls back, side by side, once."""
    names = list(fleet.names.values())
    for name in names:
        assert fleet.run("-d", name, "release", "bluegreen-model:v2", "--steps", "100").code == 0
    alerts = alertmanager_payload(1)["alerts"][0]
    payload = {**alertmanager_payload(1), "alerts": [
        {**alerts, "labels": {**alerts["labels"], "deployment": n}, "fingerprint": f"fp-{n}"} for n in names]}
    began = time.monotonic()
    answer = fleet_serve.call("POST", "/api/alerts", json=payload)
    took = time.monotonic() - began
    assert answer.status_code == 200, answer.text
    outcomes = answer.json()["deployments"]
    assert sorted(outcomes) == sorted(names) and all(o["action"] == "rollback" for o in outcomes.values())
    assert all(fleet_serve.live(n) == ("blue", "v1") for n in names)
    again = fleet_serve.call("POST", "/api/alerts", json=payload).json()["deployments"]
    assert all(o["action"] is None for o in again.values())  # the same alerts act once
    print(f"three deployments rolled back by one delivery in {took:.2f}s")


def test_fleet_serve_killed_mid_rollback_of_one_deployment_is_finished_by_its_successor(
        fleet: Fleet, fleet_serve: FleetServe) -> None:
    churn = fleet.names["churn"]
    assert fleet.run("-d", churn, "release", "bluegreen-model:v2", "--steps", "100").code == 0
    (port,) = free_ports(1)
    crashing = start_fleet_serve(fleet, port, {"BLUEGREEN_FAULT_CRASH_AT": "switch:before"})
    try:
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{port}/api/models/rollback", json={"model": churn}, timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert crashing.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop(crashing)
    status = json.loads(fleet.run("-d", churn, "status", "--json").out)
    assert status["release"]["interrupted"] is True
    successor = start_fleet_serve(fleet, port)
    try:
        after = FleetServe(f"http://127.0.0.1:{port}", successor)
        assert wait_for(lambda: after.call("GET", f"/api/deployments/{churn}/status").json()["release"] is None,
                        timeout=30)
        assert after.live(churn) == ("blue", "v1")
        other = fleet.names["fraud"]
        assert after.call("GET", f"/api/deployments/{other}/status").json()["release"] is None
    finally:
        stop(successor)
