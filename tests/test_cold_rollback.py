"""A cold rollback moves traffic only once the proxy itself takes the started colour as up.

Real Docker, HAProxy and model servers. The proxy checks each colour every
``proxy.check_interval_ms``; a colour killed a moment ago is DOWN to it until a check passes
again, however healthy the colour answers bluegreen's own gate. A long interval makes that
window seconds wide, so the test does not depend on a lucky race.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from typing import Any

from bluegreen.orchestrator.proxy.instances import socket_path
from tests.conftest import Project, wait_for
from tests.test_failover import Load

V2 = "bluegreen-model:v2"


def haproxy_status(project: Project, server: str) -> str:
    """``server``'s status in HAProxy's own ``show stat``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(socket_path(project.root / ".bluegreen" / "haproxy")))
        sock.sendall(b"show stat\n")
        text = b""
        while chunk := sock.recv(65536):
            text += chunk
    lines = text.decode().splitlines()
    header = lines[0][2:].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "models" and row.get("svname") == server:
            return row["status"]
    raise AssertionError(f"no server {server} in haproxy's stats")


def test_rollback_to_a_killed_colours_version_loses_no_request_while_haproxy_still_holds_it_down(
        project: Project, docker_client: Any) -> None:
    """v2 live on green, v1 warm on blue; green is killed and HAProxy fails over to blue. Then
    `rollback --to v2` starts v2 in green again and gates it, while HAProxy (checking every 60 s,
    a DOWN server every 15 s) still holds green DOWN. Traffic moved to green then found no server
    (503) until blue's standby line was enabled a moment later, and then the old version went on
    answering until HAProxy's next check. The rollback waits until HAProxy takes green as up:
    no request fails, and every answer after it comes from v2."""
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_PROXY__CHECK_INTERVAL_MS": "60000"})
    assert project.run("up").code == 0
    released = project.run("release", V2, "--steps", "100")
    assert released.code == 0, released.err
    with Load(project.proxy_url, threads=4) as before:
        assert wait_for(lambda: before.served_since(0) == {"v2"}, timeout=10)
        killed = time.monotonic()
        subprocess.run(["docker", "kill", f"{project.name}-green"], check=True, capture_output=True)
        assert wait_for(lambda: "v1" in before.served_since(killed), timeout=10)
    assert haproxy_status(project, "green") == "DOWN"  # taken out in band, by the failing requests

    with Load(project.proxy_url, threads=8) as load:
        assert wait_for(lambda: load.served_since(0) == {"v1"}, timeout=10)
        result = project.run("rollback", "--to", "v2", "--json")
        assert result.code == 0, result.err
        done = time.monotonic()
        assert wait_for(lambda: time.monotonic() - done > 1.0 and load.served_since(done), timeout=10)
    doc = json.loads(result.out)
    assert (doc["live"], doc["version"], doc["warm"]) == ("green", "v2", False)
    assert load.failed == 0, (load.codes, load.failures)
    assert load.served_since(done) == {"v2"}
