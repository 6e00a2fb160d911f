"""``bluegreen init``: a new deployment directory with a commented settings file."""

from __future__ import annotations

import re
from pathlib import Path

from bluegreen.orchestrator.errors import ConfigError
from bluegreen.orchestrator.settings.core import CONFIG_FILENAME, default_toml

COMPOSE_EXAMPLE = "compose.example.yaml"


def init_project(directory: Path, force: bool = False, example: str | None = None) -> dict[str, str]:
    """Write DIR/bluegreen.toml (project named after DIR) and create DIR/data; with ``example =
    "compose"`` also DIR/compose.yaml (an api and a prediction-consumer) and a bluegreen.toml
    that points at it."""
    if example not in (None, "compose"):
        raise ConfigError(f"there is no example {example!r}", "bluegreen init --example compose DIR")
    directory = directory.resolve()
    config = directory / CONFIG_FILENAME
    if config.exists() and not force:
        raise ConfigError(f"{config} already exists", "bluegreen init --force   (overwrites it)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "data").mkdir(exist_ok=True)
        text = default_toml().replace('project = "bluegreen"', f'project = "{project_name(directory)}"', 1)
        written = {"config": str(config), "data": str(directory / "data"), "state": str(directory / ".bluegreen")}
        if example == "compose":
            from importlib.resources import files

            compose = directory / "compose.yaml"
            if compose.exists() and not force:
                raise ConfigError(f"{compose} already exists", "bluegreen init --example compose --force")
            compose.write_text(files("bluegreen.orchestrator").joinpath("data", COMPOSE_EXAMPLE).read_text())
            text = (text.replace('compose = ""', 'compose = "compose.yaml"', 1)
                    .replace("with = []", 'with = ["prediction-consumer"]', 1)
                    .replace('lag_query = ""', "lag_query = \"SELECT count(*) FROM jobs WHERE status = 'queued'\"", 1))
            written["compose"] = str(compose)
        config.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {config}: {exc.strerror}", "choose a directory you can write to") from None
    return written


def project_name(directory: Path) -> str:
    """A container-name-safe project name from the directory's name."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", directory.name.lower()).strip("-._")[:40]
    return name or "bluegreen"
