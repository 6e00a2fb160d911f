"""A Docker engine reached over ssh:// (a real sshd on a loopback port, a key made by the test):
up, release, rollback, failover and status through it; bad remote settings refused by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Project, component_missing, free_ports, wait_for

SSHD = "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    home: Path  # HOME for the client: .ssh/config, its key and known_hosts
    log: Path

    def accepted(self) -> int:
        return self.log.read_text().count("Accepted publickey for root")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        component_missing("openssh-server is needed (scripts/provision.sh installs it)")
    root = tmp_path / "sshd"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    root.mkdir()
    os.chmod(home / ".ssh", 0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")],
                   check=True)
    (root / "authorized_keys").write_text((home / ".ssh" / "id_ed25519.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    (port,) = free_ports(1)
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\nMaxSessions 50\nMaxStartups 50\n"
        "LogLevel INFO\n")
    host_key = (root / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {home / '.ssh' / 'id_ed25519'}\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation directory
    log = root / "sshd.log"
    out = log.open("w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=out)
    try:
        assert wait_for(lambda: f"listening on 127.0.0.1 port {port}" in log.read_text() or proc.poll() is not None,
                        timeout=20), log.read_text()
        assert proc.poll() is None, log.read_text()
        yield Sshd(port, home, log)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        out.close()


def remote(project: Project, sshd: Sshd) -> None:
    project.env.update({"HOME": str(sshd.home), "BLUEGREEN_DOCKER__HOST": f"ssh://root@127.0.0.1:{sshd.port}",
                        "BLUEGREEN_RELEASE__BAKE": "1s"})


def version_through_proxy(project: Project) -> str:
    return str(httpx.get(f"{project.proxy_url}/version", timeout=5).json()["version"])


def test_up_release_rollback_and_failover_against_an_engine_reached_over_ssh(
        project: Project, sshd: Sshd, docker_client: Any) -> None:
    remote(project, sshd)
    up = project.run("up", "--json", timeout=300)
    assert up.code == 0, up.err
    assert version_through_proxy(project) == "v1"
    assert sshd.accepted() >= 1  # the engine was reached through sshd, with the test's key
    release = project.run("release", "bluegreen-model:v2", "--steps", "50,100", timeout=300)
    assert release.code == 0, release.err
    assert version_through_proxy(project) == "v2"
    status = json.loads(project.run("status", "--json").out)
    assert status["live"] == "green" and status["environments"]["green"]["version"] == "v2"
    assert status["environments"]["blue"]["container"] == "running"  # read over ssh too
    rollback = project.run("rollback", "--json", timeout=120)
    assert rollback.code == 0, rollback.err
    assert version_through_proxy(project) == "v1"
    # The live colour dies on the remote engine: the proxy fails over to the warm one by itself.
    docker_client.containers.get(f"{project.name}-blue").kill()
    assert wait_for(lambda: version_through_proxy(project) == "v2", timeout=10)
    noted = json.loads(project.run("status", "--json").out)
    assert any("sends its traffic to the standby green" in n for n in noted["notes"]), noted["notes"]
    assert project.run("up", timeout=300).code == 0  # the next changing command makes it official
    assert json.loads(project.run("status", "--json").out)["live"] == "green"


def test_an_unreachable_or_misconfigured_remote_engine_is_named_and_changes_nothing(
        project: Project, sshd: Sshd) -> None:
    remote(project, sshd)
    assert project.run("up", timeout=300).code == 0
    before = version_through_proxy(project)
    (closed,) = free_ports(1)
    down = project.run("status", env={"BLUEGREEN_DOCKER__HOST": f"ssh://root@127.0.0.1:{closed}"}, timeout=120)
    assert down.code == 5, down.err
    assert f"ssh://root@127.0.0.1:{closed}" in down.err and "Try:" in down.err
    stranger = sshd.home.parent / "stranger"  # a client that has never seen this host's key
    (stranger / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.home / ".ssh" / "id_ed25519", stranger / ".ssh" / "id_ed25519")
    unknown = project.run("status", env={"HOME": str(stranger)}, timeout=120)
    assert unknown.code == 5 and "known_hosts" in unknown.err, unknown.err
    bad = project.run("status", env={"BLUEGREEN_DOCKER__HOST": "http://127.0.0.1:2375"})
    assert bad.code == 4 and "docker.host" in bad.err and "ssh://" in bad.err
    tls = project.run("status", env={"BLUEGREEN_DOCKER__TLS_CA": "/nonexistent/ca.pem"})
    assert tls.code == 4 and "tls_ca apply to a tcp:// engine only" in tls.err
    missing = project.run("status", env={"BLUEGREEN_DOCKER__HOST": "tcp://127.0.0.1:2376",
                                         "BLUEGREEN_DOCKER__TLS_CA": "/nonexistent/ca.pem"})
    assert missing.code == 5 and "docker.tls_ca = '/nonexistent/ca.pem': no such file" in missing.err
    assert version_through_proxy(project) == before  # nothing moved
