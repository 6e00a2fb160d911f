"""The distribution as users install it: a wheel in a fresh virtual environment, not an editable checkout.

It must install one import namespace (``bluegreen``), carry its package data (the default
settings, the bundled holdout, the model server's sources), and run a real release from there.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import Project, free_ports
from tests.wheel import Installed


def test_the_wheel_and_the_install_hold_only_the_bluegreen_namespace(installed: Installed) -> None:
    listing = subprocess.run(
        [str(installed.python), "-c",
         "import importlib.metadata as m, json; print(json.dumps(sorted({str(f).split('/')[0] "
         "for f in m.files('bluegreen')})))"],
        check=True, capture_output=True, text=True, cwd="/")
    top = {name for name in json.loads(listing.stdout) if not name.endswith(".dist-info") and name != ".."}
    assert top == {"bluegreen"}
    # The old top-level names are not importable, so nothing named orchestrator, environments or
    # backups on PyPI can clash with it; the namespace's parts and their data are.
    probe = subprocess.run(
        [str(installed.python), "-c",
         "import importlib.util as u, importlib.resources as r; "
         "print([u.find_spec(n) is None for n in ('orchestrator', 'environments', 'backups')]); "
         "print(r.files('bluegreen.orchestrator').joinpath('data/iris_holdout.json').is_file(), "
         "r.files('bluegreen.orchestrator.settings').joinpath('default.toml').is_file(), "
         "r.files('bluegreen.environments').joinpath('model_server/Dockerfile').is_file())"],
        check=True, capture_output=True, text=True, cwd="/")
    assert probe.stdout.split("\n")[:2] == ["[True, True, True]", "True True True"]


@pytest.mark.usefixtures("docker_client")
def test_a_release_and_a_rollback_run_from_the_installed_wheel(installed: Installed, tmp_path: Path) -> None:
    """The bundled holdout, the defaults and the drivers all come from site-packages, not the checkout."""
    proxy_port, blue, green = free_ports(3)
    project = Project(root=tmp_path / "deploy", name=f"wheel{os.getpid()}", proxy_port=proxy_port,
                      blue_port=blue, green_port=green)
    project.root.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return installed.run(*args, cwd=project.root, env={"BLUEGREEN_ACTOR": "wheel-test"})

    try:
        init = run("init", str(project.root))
        assert init.returncode == 0, init.stderr
        project.write_config()  # same commented defaults, this test's ports
        up = run("up")
        assert up.returncode == 0, up.stderr
        released = run("release", "bluegreen-model:v2", "--bake", "0.2s", "--json")
        assert released.returncode == 0, released.stderr
        doc = json.loads(released.stdout)
        gate = next(s for s in doc["steps"] if s["name"] == "gate")
        assert doc["status"] == "promoted" and gate["quality"]["candidate"]["accuracy"] >= 0.9  # the bundled holdout
        answer = httpx.post(f"{project.proxy_url}/predict", json={"features": [5.1, 3.5, 1.4, 0.2]}, timeout=10)
        assert answer.json()["model_version"] == "v2"
        back = run("rollback", "--json")
        assert back.returncode == 0, back.stderr
        assert json.loads(back.stdout)["version"] == "v1"
    finally:
        run("down")


@pytest.mark.usefixtures("docker_client")
def test_a_part_whose_extra_is_not_installed_is_an_error_naming_the_extra(installed: Installed,
                                                                        tmp_path: Path) -> None:
    """Without the compose extra, a compose colour and the demo stop before anything starts, with
    ``Error:`` naming the package and ``pip install 'bluegreen[compose]'`` (exit 16), not a traceback."""
    proxy_port, blue, green = free_ports(3)
    project = Project(root=tmp_path, name=f"plain{os.getpid()}", proxy_port=proxy_port, blue_port=blue,
                      green_port=green)
    init = installed.run("init", "--example", "compose", str(tmp_path), cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    text = (tmp_path / "bluegreen.toml").read_text()
    for old, new in (("port = 8080", f"port = {proxy_port}"), ("port = 8101", f"port = {blue}"),
                     ("port = 8102", f"port = {green}")):
        text = text.replace(old, new)
    (tmp_path / "bluegreen.toml").write_text(text)

    up = installed.run("up", cwd=tmp_path)
    assert up.returncode == 16, (up.stdout, up.stderr)
    assert "Traceback" not in up.stderr
    assert up.stderr.splitlines()[-1] == "Try: pip install 'bluegreen[compose]'   (runbooks/install.md)"
    assert "is not installed" in up.stderr and "environments.compose" in up.stderr
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={project.name}"],
                            capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == ""  # nothing was started
    assert not (tmp_path / ".bluegreen" / "haproxy" / "haproxy.pid").exists()

    demo = installed.run("demo", "--json", cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    assert demo.returncode == 16, (demo.stdout, demo.stderr)
    doc = json.loads(demo.stdout)  # one document, the error
    assert doc["error"] == "MissingDependency" and "bluegreen[compose]" in doc["hint"], doc
    assert not any(p.name.startswith("bluegreen-demo-") for p in tmp_path.iterdir())

