"""A proxy of two HAProxy processes sharing its port, against kill -9: real HAProxy, real supervisors.

The fleet's shared proxy in its containers (the engine restarts a dead one), two deployments behind
it, and a client thread per kept-alive connection: a killed process costs at most the request in
flight on each connection it held, and comes back with the weights and standby the other holds,
including a change made right after the kill. The fleet under the process supervisor (nothing
restarts a process; traffic goes on without it) is in test_fleet.py; counters are in test_haproxy.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bluegreen.environments.runtime import DockerRuntime
from bluegreen.orchestrator.proxy import Backend
from bluegreen.orchestrator.proxy.base import process_alive
from bluegreen.orchestrator.proxy.fleet import Route, SharedHAProxy
from bluegreen.orchestrator.proxy.haproxy import HAProxy
from bluegreen.orchestrator.proxy.instances import Process, socket_path
from bluegreen.orchestrator.proxy.supervise import ContainerSupervisor
from tests.conftest import Connection, free_ports, wait_for
from tests.test_haproxy import backend_server


def master_and_worker(container: str) -> tuple[int, int | None]:
    """The host pids of the HAProxy master (the container's first process) and of its worker."""
    pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True,
                             text=True, check=True).stdout)
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return pid, int(children[0]) if children else None


def weights_and_standby(proxy: HAProxy, process: Process) -> tuple[dict[str, int], str | None]:
    """What one process of the proxy holds for one deployment, read from that process's own socket."""
    return proxy._weights_of(process), proxy._standby_of(process)


@pytest.fixture
def fleet_in_containers(tmp_path: Path, docker_client: Any) -> Iterator[tuple[SharedHAProxy, HAProxy, HAProxy]]:
    """The fleet's proxy (two processes, each in its container) with deployments alpha (by prefix) and
    beta (by host), whose colours are two small HTTP servers."""
    port, blue, green = free_ports(3)
    # A backlog that takes the killed process's clients reconnecting at once: socketserver's default (5)
    # refuses some, and one refused connection marks a colour down.
    servers = [backend_server("blue", blue, backlog=128), backend_server("green", green, backlog=128)]
    name = f"fleet-t{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "fleet"
    supervisor = ContainerSupervisor(DockerRuntime(name, "", 30.0), name,
                                     sorted({directory, socket_path(directory).parent}))
    shared = SharedHAProxy(directory, "127.0.0.1", port, [Route("alpha", prefix="/alpha"),
                                                          Route("beta", hosts=("beta.example.com",))],
                           supervisor=supervisor, processes=2)
    colours = [Backend("blue", "127.0.0.1", blue), Backend("green", "127.0.0.1", green)]
    alpha = HAProxy(directory, "127.0.0.1", port, colours, check_interval_ms=200, shared=shared, name="alpha",
                    strip_prefix="/alpha")
    beta = HAProxy(directory, "127.0.0.1", port, colours, check_interval_ms=200, shared=shared, name="beta")
    try:
        alpha.start({"blue": 100, "green": 0}, "green")
        beta.start({"blue": 100, "green": 0}, "green")
        yield shared, alpha, beta
    finally:
        shared.stop()
        subprocess.run(["docker", "rm", "-f", name, f"{name}-2"], capture_output=True)
        for s in servers:
            s.shutdown()
            s.server_close()


@pytest.mark.parametrize("target", ["worker", "master"])
def test_a_killed_process_costs_only_the_requests_on_its_connections_and_comes_back_with_the_latest_weights(
        fleet_in_containers: tuple[SharedHAProxy, HAProxy, HAProxy], target: str) -> None:
    """kill -9 of process 1's worker (its master exits with it) or master (its worker follows), then at
    once a weight change in one deployment and a standby change in the other: each client connection
    loses at most the request in flight on it, traffic goes on, and the engine restarts the process,
    which holds what the survivor holds."""
    shared, alpha, beta = fleet_in_containers
    assert [p.number for p in shared.processes.running()] == [1, 2]
    assert alpha.wait_servers_up("blue", 10) and beta.wait_servers_up("blue", 10)
    url = f"http://127.0.0.1:{shared.port}"
    gone = threading.Event()
    connections = ([Connection(f"{url}/alpha/", reconnect=gone) for _ in range(4)]
                   + [Connection(f"{url}/", {"Host": "beta.example.com"}, reconnect=gone) for _ in range(4)])
    try:
        assert wait_for(lambda: all(len(c.ok) >= 5 for c in connections), timeout=20)
        master, worker = master_and_worker(shared.supervisor.name)  # type: ignore[attr-defined]
        assert worker is not None
        os.kill(worker if target == "worker" else master, signal.SIGKILL)
        t_kill = time.monotonic()
        alpha.set_weights({"blue": 30, "green": 70})
        beta.set_standby(None)
        first = shared.processes.first
        assert wait_for(lambda: not process_alive(master) and not process_alive(worker), timeout=10)
        gone.set()

        def back() -> bool:
            try:
                return master_and_worker(shared.supervisor.name)[0] != master and first.answers()  # type: ignore[attr-defined]
            except subprocess.CalledProcessError:
                return False

        assert wait_for(back, timeout=30)
        assert wait_for(lambda: all(c.ok_since(t_kill) >= 20 for c in connections), timeout=20)
    finally:
        for c in connections:
            c.stop()
    # Each connection held by the killed process lost at most its one request in flight; the client's
    # next connection, made once the process was gone, reached a live one.
    failures = [[(round(t - t_kill, 3), why) for t, why in c.why] for c in connections]
    assert all(len(f) <= 1 for f in failures), failures
    first, second = shared.processes.all
    assert weights_and_standby(alpha, first) == weights_and_standby(alpha, second) == ({"blue": 30, "green": 70},
                                                                                       "green")
    assert weights_and_standby(beta, first) == weights_and_standby(beta, second) == ({"blue": 100, "green": 0},
                                                                                     None)
    assert alpha.weights() == {"blue": 30, "green": 70} and beta.standby() is None
    restarts = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", shared.supervisor.name],  # type: ignore[attr-defined]
                              capture_output=True, text=True, check=True).stdout.strip()
    assert restarts == "1"
