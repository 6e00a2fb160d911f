"""runtime.kind = "swarm": each colour a Swarm service of 3 replicas on a real single-node swarm
(initialised by the test when the engine is not in one, and left again afterwards), behind a real
HAProxy holding a server per replica: release, rollback, failover, a dead task, tasks that keep
failing, recovery after a crash."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bluegreen.orchestrator.common.ports import free_port_run
from tests.conftest import BLUEGREEN, Project, Traffic, wait_for

REPLICAS = 3


@pytest.fixture(scope="module")
def swarm(docker_client: Any) -> Iterator[Any]:
    """A single-node swarm: the engine's own if it is a manager already, else one made (and left) here."""
    state = docker_client.info().get("Swarm", {}).get("LocalNodeState")
    made = False
    if state != "active":
        init = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True,
                              text=True, timeout=120)
        if init.returncode != 0:
            pytest.fail(f"docker swarm init failed: {init.stderr}")
        made = True
    yield docker_client
    if made:
        subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=120)


@pytest.fixture
def swarm_project(project: Project, swarm: Any) -> Iterator[Project]:
    first = free_port_run(2 * REPLICAS)
    project.blue_port, project.green_port = first, first + REPLICAS
    project.write_config()
    project.env.update({"BLUEGREEN_RUNTIME__KIND": "swarm", "BLUEGREEN_RUNTIME__REPLICAS": str(REPLICAS),
                        "BLUEGREEN_RUNTIME__PORT_STEP": "1", "BLUEGREEN_RELEASE__BAKE": "1s"})
    yield project
    for color in ("blue", "green"):
        subprocess.run(["docker", "service", "rm", f"{project.name}-{color}"], capture_output=True)
    subprocess.run(["docker", "config", "rm", f"{project.name}-blue-stash-spec", f"{project.name}-green-stash-spec"],
                   capture_output=True)


def version_at(url: str) -> str:
    return str(httpx.get(f"{url}/version", timeout=5).json()["version"])


def replica_versions(project: Project, color: str) -> list[str]:
    base = project.blue_port if color == "blue" else project.green_port
    return [version_at(f"http://127.0.0.1:{base + i}") for i in range(REPLICAS)]


def answering(project: Project, color: str, version: str) -> bool:
    try:
        return replica_versions(project, color) == [version] * REPLICAS
    except httpx.HTTPError:
        return False


def task_containers(docker_client: Any, project: Project, color: str) -> list[Any]:
    return docker_client.containers.list(filters={"label": f"com.docker.swarm.service.name={project.name}-{color}"})


def server_sessions(project: Project) -> dict[str, int]:
    """Sessions per HAProxy server, read from its admin socket."""
    sock_path = project.root / ".bluegreen" / "haproxy" / "admin.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(b"show stat\n")
        text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    header = text.splitlines()[0][2:].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in text.splitlines()[1:] if line]
    return {r["svname"]: int(r["stot"] or 0) for r in rows if r.get("pxname") == "models"}


def test_release_and_rollback_with_three_replicas_per_colour(swarm_project: Project, swarm: Any) -> None:
    project = swarm_project
    up = project.run("up", timeout=300)
    assert up.code == 0, up.err
    assert replica_versions(project, "blue") == ["v1"] * REPLICAS
    status = json.loads(project.run("status", "--json").out)
    assert status["environments"]["blue"]["container"] == "running"
    services = {s.name: s for s in swarm.services.list()}
    spec = services[f"{project.name}-blue"].attrs["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == REPLICAS
    traffic = Traffic(project.proxy_url, pause=0.01)
    try:
        release = project.run("release", "bluegreen-model:v2", "--steps", "50,100", "--bake", "2s", timeout=300)
        assert release.code == 0, release.err
        assert "on each of 3 replicas" in release.err
        # The proxy timed the colour's requests on every replica, shown beside the servers' own histogram.
        assert re.search(r"shift-50: .*p95 \d+ms \(server histogram\), proxy \d+ms", release.err), release.err
    finally:
        traffic.stop()
    assert traffic.failed == 0 and traffic.sent > 100, (traffic.sent, traffic.failed)
    assert replica_versions(project, "green") == ["v2"] * REPLICAS
    sessions = server_sessions(project)
    assert all(sessions[name] > 0 for name in ("green", "green-2", "green-3")), sessions  # every replica served
    rollback = project.run("rollback", "--json", timeout=120)
    assert rollback.code == 0, rollback.err
    assert json.loads(rollback.out)["warm"] is True  # the previous colour was kept, scaled, as a service
    assert wait_for(lambda: version_at(project.proxy_url) == "v1", timeout=10)


def test_a_dead_task_is_replaced_and_does_not_fail_a_healthy_release(swarm_project: Project, swarm: Any) -> None:
    project = swarm_project
    assert project.run("up", timeout=300).code == 0
    traffic = Traffic(project.proxy_url, pause=0.01)
    proc = subprocess.Popen([*BLUEGREEN, "release", "bluegreen-model:v2", "--steps", "50,100", "--bake", "8s"],
                            cwd=project.root, env={**os.environ, **project.env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "shift-50" in line and "baking" in line:
                break
        victim = task_containers(swarm, project, "green")[0]
        victim.kill()  # one of the candidate's three tasks dies mid-bake
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        traffic.stop()
    assert proc.returncode == 0, err
    assert "1 replica(s) died and were taken out" in err  # the proxy took it out; its attempts were not errors
    assert wait_for(lambda: len(task_containers(swarm, project, "green")) == REPLICAS, timeout=60)  # replaced
    assert wait_for(lambda: replica_versions(project, "green") == ["v2"] * REPLICAS, timeout=60)
    assert traffic.failed == 0, (traffic.sent, traffic.failed)


def test_a_colour_whose_tasks_keep_failing_fails_the_release_and_traffic_stays(
        swarm_project: Project, swarm: Any) -> None:
    project = swarm_project
    assert project.run("up", timeout=300).code == 0
    failing = project.run("release", "bluegreen-model:v2", "--env", "FAULT_CRASH_ON_START=1", timeout=300,
                          env={"BLUEGREEN_RUNTIME__CONVERGE_TIMEOUT": "60"})
    # Stopped before any traffic moved, whether the tasks were caught failing while Swarm converged them
    # or right after (they run a moment before they crash); either way with their own last words.
    assert failing.code == 11 and "failed at start" in failing.err, failing.err
    assert "FAULT_CRASH_ON_START is set" in failing.err
    assert swarm.services.list(filters={"name": f"{project.name}-green"}) == []  # removed, not left crashing
    assert version_at(project.proxy_url) == "v1"
    assert replica_versions(project, "blue") == ["v1"] * REPLICAS


def test_failover_when_the_live_colours_tasks_die_and_recovery_after_a_crash(
        swarm_project: Project, swarm: Any) -> None:
    project = swarm_project
    assert project.run("up", timeout=300).code == 0
    assert project.run("release", "bluegreen-model:v2", "--steps", "100", timeout=300).code == 0
    traffic = Traffic(project.proxy_url, pause=0.01)
    try:
        for container in task_containers(swarm, project, "green"):
            container.kill()  # every task of the live colour at once
        assert wait_for(lambda: version_at(project.proxy_url) == "v1", timeout=10)  # the standby answers
        assert wait_for(lambda: answering(project, "green", "v2"), timeout=90)  # Swarm replaced every task
    finally:
        traffic.stop()
    assert traffic.failed == 0, (traffic.sent, traffic.failed)
    # A release killed mid-way is finished by the next command.
    crashed = project.run("release", "bluegreen-model:v1", "--steps", "50,100", timeout=300,
                          env={"BLUEGREEN_FAULT_CRASH_AT": "shift-50:after"})
    assert crashed.code == -signal.SIGKILL
    recover = project.run("recover", "--json", timeout=300)
    assert recover.code == 0, recover.err
    live = json.loads(project.run("status", "--json").out)
    assert live["release"] is None
    assert version_at(project.proxy_url) in ("v1", "v2")
    assert all(v == version_at(project.proxy_url) for v in replica_versions(project, live["live"]))
