"""``bluegreen init``: a new deployment directory with a commented settings file."""

from __future__ import annotations

import re
from pathlib import Path

from bluegreen.orchestrator.errors import ConfigError
from bluegreen.orchestrator.settings_core import CONFIG_FILENAME, default_toml


def init_project(directory: Path, force: bool = False) -> dict[str, str]:
    """Write DIR/bluegreen.toml (project named after DIR) and create DIR/data."""
    directory = directory.resolve()
    config = directory / CONFIG_FILENAME
    if config.exists() and not force:
        raise ConfigError(f"{config} already exists", "bluegreen init --force   (overwrites it)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        text = default_toml().replace('project = "bluegreen"', f'project = "{project_name(directory)}"', 1)
        config.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {config}: {exc.strerror}", "choose a directory you can write to") from None
    return {"config": str(config), "data": str(directory / "data"), "state": str(directory / ".bluegreen")}


def project_name(directory: Path) -> str:
    """A container-name-safe project name from the directory's name."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", directory.name.lower()).strip("-._")[:40]
    return name or "bluegreen"
