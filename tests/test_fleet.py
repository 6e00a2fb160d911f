"""A fleet on one host: three deployments behind one real HAProxy, routed by host and by path prefix.

One fleet (its proxy and three deployments' colours) is shared by the tests of this module; each
test leaves it serving v1 everywhere. Commands run through the real CLI with ``-d`` from another
directory; traffic goes through the fleet's one listener.
"""

from __future__ import annotations

import json
import os
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
                     ('bake = "30s"', 'bake = "0.3s"')):
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
