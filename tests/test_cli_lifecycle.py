"""init, up, status, logs and down through the real CLI, on real Docker and HAProxy.

Each bad input must give one clear error, a non-zero exit code, and leave nothing started.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

from tests.conftest import BLUEGREEN, Project, haproxy_processes


def containers(project: Project) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=bluegreen.project={project.name}",
                          "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


def status(project: Project) -> dict[str, Any]:
    result = project.run("status", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def assert_nothing_started(project: Project) -> None:
    assert containers(project) == []
    assert haproxy_processes(project) == []


def test_init_writes_a_commented_config_and_refuses_to_overwrite(project: Project) -> None:
    target = project.root / "new"
    first = project.run("init", str(target))
    assert first.code == 0, first.err
    assert first.out.startswith(f"wrote {target / 'bluegreen.toml'}\n")
    text = (target / "bluegreen.toml").read_text()
    assert 'project = "new"' in text and "# Where clients send requests" in text
    assert (target / "data").is_dir()
    again = project.run("init", str(target))
    assert again.code == 4
    assert again.err == (f"Error: {target / 'bluegreen.toml'} already exists\n"
                         "Try: bluegreen init --force   (overwrites it)\n")


def test_up_serves_predictions_through_haproxy_from_blue_and_records_them(project: Project) -> None:
    result = project.run("up")
    assert result.code == 0, result.err
    assert "blue is live with bluegreen-model:v1" in result.out
    assert f"send requests to {project.proxy_url}/predict" in result.out
    assert "blue healthy in" in result.err  # progress goes to stderr

    response = httpx.post(f"{project.proxy_url}/predict", json={"features": [6.3, 2.5, 5.0, 1.9]}, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "v1"
    with sqlite3.connect(project.db_path, timeout=60) as conn:
        row = conn.execute("SELECT model_version, prediction FROM predictions WHERE id = ?",
                           (body["prediction_id"],)).fetchone()
    assert row == ("v1", body["prediction"])

    s = status(project)
    assert s["live"] == "blue" and s["proxy_running"] is True
    assert s["weights"] == {"blue": 100, "green": 0}
    blue = s["environments"]["blue"]
    assert (blue["image"], blue["version"], blue["container"], blue["healthy"]) == (
        "bluegreen-model:v1", "v1", "running", True)
    assert s["environments"]["green"]["container"] == "absent"
    assert containers(project) == [f"{project.name}-blue", f"{project.name}-proxy"]  # the proxy is supervised too


def test_status_shows_the_weights_haproxy_really_has(project: Project) -> None:
    """Weights changed behind bluegreen's back show in status: they are read, not remembered."""
    assert project.run("up").code == 0
    sock = project.root / ".bluegreen" / "haproxy" / "admin.sock"
    from bluegreen.orchestrator.proxy.instances import socket_path

    path = socket_path(sock.parent)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(b"set weight models/blue 40\n")
        s.recv(100)
    st = status(project)
    assert st["weights"] == {"blue": 40, "green": 0}
    assert st["recorded_weights"] == {"blue": 100, "green": 0}


def test_up_twice_changes_nothing_the_second_time(project: Project) -> None:
    assert project.run("up").code == 0
    first_id = status(project)["environments"]["blue"]["container_id"]
    second = project.run("up")
    assert second.code == 0
    assert second.out.startswith("already up: blue serves bluegreen-model:v1\n")
    assert status(project)["environments"]["blue"]["container_id"] == first_id
    history = json.loads(project.run("history", "--json").out)["audit"]
    assert [(h["action"], h["outcome"], h["actor"]) for h in history] == [("up", "ok", "tester")] * 2
    assert history[0]["detail"] == "already up; nothing changed"


def test_logs_show_the_model_servers_output(project: Project) -> None:
    assert project.run("up").code == 0
    result = project.run("logs", "blue")
    assert result.code == 0
    assert f"listening on 127.0.0.1:{project.blue_port}" in result.out
    bad = project.run("logs", "purple")
    assert bad.code == 2
    assert "'purple' is not a colour; use blue or green" in bad.err


def test_down_stops_everything_and_up_brings_it_back(project: Project) -> None:
    assert project.run("up").code == 0
    result = project.run("down")
    assert result.code == 0
    assert result.out == "stopped haproxy, blue\n"
    assert_nothing_started(project)
    s = status(project)
    assert (s["proxy_running"], s["weights"], s["live"]) == (False, None, "blue")
    assert project.run("down").out == "nothing was running\n"
    assert project.run("up").code == 0
    assert httpx.get(f"{project.proxy_url}/version", timeout=5).json()["version"] == "v1"


def test_an_unreachable_docker_engine_is_a_clear_error(project: Project) -> None:
    result = project.run("up", env={"BLUEGREEN_DOCKER__HOST": f"unix://{project.root}/no-engine.sock"})
    assert result.code == 5
    lines = result.err.splitlines()
    assert lines[0].startswith(f"Error: the Docker engine at unix://{project.root}/no-engine.sock does not answer")
    assert lines[1] == "Try: start the engine (scripts/provision.sh does) or set docker.host   (runbooks/docker.md)"
    assert_nothing_started(project)


def test_a_missing_image_points_at_images_build(project: Project) -> None:
    result = project.run("up", env={"BLUEGREEN_ENVIRONMENTS__VERSION": "no-such-version"})
    assert result.code == 6
    assert result.err == ("Error: image bluegreen-model:no-such-version is not on the Docker engine\n"
                          "Try: bluegreen images build   (runbooks/images.md)\n")
    assert_nothing_started(project)


def test_a_taken_environment_port_is_refused_and_nothing_starts(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", project.blue_port))
        taken.listen()
        result = project.run("up")
    assert result.code == 7
    assert result.err.splitlines()[0] == (
        f"Error: port 127.0.0.1:{project.blue_port} (environments.blue.port) is already in use by another process")
    assert_nothing_started(project)


def test_a_taken_proxy_port_removes_the_container_it_started(project: Project) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", project.proxy_port))
        taken.listen()
        result = project.run("up")
    assert result.code == 7
    assert f"port 127.0.0.1:{project.proxy_port} (proxy.port) is already in use" in result.err
    assert_nothing_started(project)


def test_a_container_crashing_at_start_is_reported_with_its_logs(project: Project) -> None:
    result = project.run("up", env={"BLUEGREEN_ENVIRONMENTS__ENV": '{"FAULT_CRASH_ON_START": "1"}'})
    assert result.code == 8
    assert "Error: blue container exited with code 3 before becoming healthy" in result.err
    assert "FAULT_CRASH_ON_START is set: exiting with status 3" in result.err
    assert result.err.rstrip().endswith("Try: bluegreen logs blue   (runbooks/failed-start.md)")
    assert_nothing_started(project)
    [entry] = json.loads(project.run("history", "--json").out)["audit"]
    assert entry["outcome"] == "failed" and "exited with code 3" in entry["detail"]


def test_a_container_that_never_becomes_healthy_times_out(project: Project) -> None:
    result = project.run("up", env={"BLUEGREEN_ENVIRONMENTS__ENV": '{"FAULT_UNHEALTHY": "1"}',
                                    "BLUEGREEN_ENVIRONMENTS__HEALTH_TIMEOUT": "2"})
    assert result.code == 8
    assert "Error: blue did not become healthy in 2s (last answer: HTTP 503)" in result.err
    assert_nothing_started(project)


def test_bad_settings_stop_the_command_before_anything_happens(project: Project) -> None:
    result = project.run("up", env={"BLUEGREEN_PROXY__PORT": "http"})
    assert result.code == 4
    assert result.err == (
        "Error: invalid settings: proxy.port = 'http' (from BLUEGREEN_PROXY__PORT): "
        "Input should be a valid integer, unable to parse string as an integer\n"
        "Try: fix bluegreen.toml or the variable named; bluegreen init --force writes the commented default"
        "   (runbooks/settings.md)\n")
    assert_nothing_started(project)
    assert not (project.root / ".bluegreen").exists()


def test_json_errors_are_machine_readable(project: Project) -> None:
    result = project.run("up", "--json", env={"BLUEGREEN_ENVIRONMENTS__VERSION": "nope"})
    assert result.code == 6
    assert json.loads(result.out) == {
        "error": "ImageNotFound", "message": "image bluegreen-model:nope is not on the Docker engine",
        "hint": "bluegreen images build   (runbooks/images.md)", "exit_code": 6}


def test_verbose_adds_the_traceback(project: Project) -> None:
    result = project.run("--verbose", "up", env={"BLUEGREEN_ENVIRONMENTS__VERSION": "nope"})
    assert result.code == 6
    assert "Traceback (most recent call last)" in result.err
    assert "Error: image bluegreen-model:nope is not on the Docker engine" in result.err
    plain = project.run("up", env={"BLUEGREEN_ENVIRONMENTS__VERSION": "nope"})
    assert "Traceback" not in plain.err


def test_a_second_operator_is_refused_while_the_lock_is_held(project: Project) -> None:
    holder = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from bluegreen.orchestrator.state.lock import DeploymentLock
        lock = DeploymentLock(Path(".bluegreen/lock")).acquire("release", "alice@ops")
        print("held", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", holder], cwd=project.root, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        result = project.run("up")
        assert result.code == 3
        assert result.err.startswith(f"Error: locked by alice@ops (pid {child.pid}, bluegreen release) since ")
        assert "Try: wait for it to finish, then retry; bluegreen status shows it   (runbooks/locks.md)" in result.err
        assert_nothing_started(project)
        assert status(project)["lock"].startswith(f"alice@ops (pid {child.pid}, bluegreen release)")
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    # The holder is gone: the next operator gets the lock, and the stale record is noted.
    assert project.run("up").code == 0
    history = json.loads(project.run("history", "--json").out)["audit"]
    assert history[0]["detail"].startswith(f"cleared a stale lock left by alice@ops (pid {child.pid}")


def test_every_command_and_group_has_help() -> None:
    for args in (["--help"], ["init", "--help"], ["up", "--help"], ["status", "--help"], ["down", "--help"],
                 ["logs", "--help"], ["history", "--help"], ["images", "--help"], ["images", "build", "--help"]):
        proc = subprocess.run([*BLUEGREEN, *args], capture_output=True, text=True)
        assert proc.returncode == 0 and "Usage:" in proc.stdout, args


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["release", "bluegreen-model:v2", "--bake", "abc"],
         "Error: Invalid value for --bake: 'abc' must be a duration such as 30s, 500ms, 2m or a number of seconds\n"
         "Try: bluegreen release --help\n"),
        (["release", "bluegreen-model:v2", "--steps", "a,b"],
         "Error: Invalid value for --steps: 'a,b' must be comma-separated percentages such as 10,25,50,100\n"
         "Try: bluegreen release --help\n"),
        (["release", "bluegreen-model:v2", "--env", "FOO"],
         "Error: Invalid value for --env: 'FOO' must be KEY=VALUE\nTry: bluegreen release --help\n"),
        (["logs", "purple"],
         "Error: Invalid value for COLOR: 'purple' is not a colour; use blue or green\nTry: bluegreen logs --help\n"),
        (["backup", "restore", "20260101T000000.000000Z-abcd"],
         "Error: Invalid value for --yes: restoring replaces the live database; pass --yes to confirm\n"
         "Try: bluegreen backup restore --help\n"),
        (["status", "--frob"], "Error: No such option: --frob\nTry: bluegreen status --help\n"),
        (["nope"], "Error: No such command 'nope'.\nTry: bluegreen --help\n"),
    ],
)
def test_usage_errors_have_the_same_shape_as_every_other_error(project: Project, args: list[str], err: str) -> None:
    """Typer's usage errors print Error:/Try: lines on stderr (no panel), exit 2, and change nothing."""
    result = project.run(*args)
    assert (result.code, result.out, result.err) == (2, "", err)
    assert not (project.root / ".bluegreen").exists()


def test_the_state_directory_and_everything_in_it_is_private(project: Project) -> None:
    """Audit log, proxy files and backups: only their owner may list them, even if made wider before."""
    (project.root / ".bluegreen").mkdir(mode=0o755)
    assert project.run("up").code == 0
    assert project.run("backup", "create").code == 0
    state = project.root / ".bluegreen"
    for path in (state, state / "haproxy", state / "backups"):
        assert oct(path.stat().st_mode & 0o777) == "0o700", path
    assert oct((state / "state.db").stat().st_mode & 0o777) == "0o600"
