"""The distribution as users install it: the wheel built once per run, installed into fresh virtual
environments — with no extras (what ``pip install bluegreen`` gives) and with the compose extra."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# No interpreter shims, no /usr/local: the programs an extra installs must come from the venv itself.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    bluegreen: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A user's environment: no PYTHONPATH, no checkout, the system's PATH only."""
        keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR", "DOCKER_HOST", "CI")}
        return {**keep, "PATH": SYSTEM_PATH, **extra}

    def run(self, *args: str, cwd: Path, timeout: float = 180,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bluegreen), *args], cwd=cwd, env=self.env(**(env or {})),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(REPO)],
                   check=True, capture_output=True, text=True)
    [built] = dist.glob("bluegreen-*.whl")
    return built


def _install(wheel: Path, root: Path, requirement: str) -> Installed:
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", requirement],
                   check=True, capture_output=True, text=True)
    return Installed(wheel, python, env_dir / "bin" / "bluegreen")


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """``pip install bluegreen``: the declared dependencies only."""
    yield _install(wheel, tmp_path_factory.mktemp("plain"), str(wheel))


@pytest.fixture(scope="session")
def installed_with_compose(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """``pip install 'bluegreen[compose]'``: what the demo and compose colours need."""
    yield _install(wheel, tmp_path_factory.mktemp("compose"), f"{wheel}[compose]")
