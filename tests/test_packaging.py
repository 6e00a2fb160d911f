"""The distribution as users install it: a wheel in a fresh virtual environment, not an editable checkout.

It must install one import namespace (``bluegreen``), carry its package data (the default
settings, the bundled holdout, the model server's sources), and run a real release from there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, Project, free_ports


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    bluegreen: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel from the checkout and install it (with its dependencies) into a new venv."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True)
    [wheel] = dist.glob("bluegreen-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, text=True)
    yield Installed(wheel, python, env_dir / "bin" / "bluegreen")


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
         "r.files('bluegreen.orchestrator').joinpath('default.toml').is_file(), "
         "r.files('bluegreen.environments').joinpath('model_server/Dockerfile').is_file())"],
        check=True, capture_output=True, text=True, cwd="/")
    assert probe.stdout.split("\n")[:2] == ["[True, True, True]", "True True True"]


@pytest.mark.usefixtures("docker_client")
def test_a_release_and_a_rollback_run_from_the_installed_wheel(installed: Installed, tmp_path: Path) -> None:
    """The bundled holdout, the defaults and the drivers all come from site-packages, not the checkout."""
    proxy_port, blue, green = free_ports(3)
    project = Project(root=tmp_path / "deploy", name=f"wheel{os.getpid()}", proxy_port=proxy_port,
                      blue_port=blue, green_port=green)
    env = {**os.environ, "BLUEGREEN_ACTOR": "wheel-test", "PYTHONPATH": ""}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(installed.bluegreen), *args], cwd=project.root, env=env, capture_output=True,
                              text=True, timeout=180, stdin=subprocess.DEVNULL)

    try:
        init = subprocess.run([str(installed.bluegreen), "init", str(project.root)], env=env, capture_output=True,
                              text=True, timeout=60)
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
