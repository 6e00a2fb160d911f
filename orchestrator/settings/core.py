"""What the settings mean without pydantic: names, rules, the settings file, and derived paths.

Standard library only. The pydantic schema (``settings.py``) validates with these rules, and
the commands that must start fast (``rollback``, ``status``) read validated settings from the
settings cache (``settings_cache.py``) without importing pydantic at all: importing
pydantic-settings alone costs more than the rest of a rollback (BENCHMARKS.md).
"""

from __future__ import annotations

import itertools
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

CONFIG_FILENAME = "bluegreen.toml"
ENV_PREFIX = "BLUEGREEN_"
COLORS = ("blue", "green")
DEFAULT_STATE_DIR = ".bluegreen"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_duration(value: object) -> float:
    """Seconds from 30, 2.5, "30s", "500ms", "2m" or "1h"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("must be a duration such as 30s, 500ms, 2m or a number of seconds")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from 65536, "64KiB", "1MiB", "1MB" (KB, MB, GB count in thousands; KiB, MiB, GiB in 1024s)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError("must be a size such as 64KiB, 1MiB, 1MB or a number of bytes")
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    if size < 0:
        raise ValueError("must not be negative")
    return size


def check_steps(steps: list[int]) -> list[int]:
    """Traffic steps in percent: strictly increasing, each in 1..100, ending at 100."""
    if not steps:
        raise ValueError("must list at least one step, ending at 100")
    if any(not 1 <= s <= 100 for s in steps):
        raise ValueError("each step must be a percentage in 1..100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ValueError("steps must increase")
    if steps[-1] != 100:
        raise ValueError("the last step must be 100")
    return steps


# The team's own checks ([[release.checks]]): the points of a release they run at, and what their
# URL, headers, body and environment may name: {candidate} and {live} (each colour's base URL) and
# {version} (the version being released).
CHECK_POINTS = ("gate", "step", "promote")
CHECK_PLACEHOLDERS = ("candidate", "live", "version")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def check_placeholders(text: str) -> str:
    """``text`` when every ``{name}`` in it is one a check fills in; else ValueError naming the stranger."""
    for name in _PLACEHOLDER.findall(text):
        if name not in CHECK_PLACEHOLDERS:
            raise ValueError(f"{{{name}}} is not a placeholder a check fills in (those are "
                             + ", ".join(f"{{{n}}}" for n in CHECK_PLACEHOLDERS) + ")")
    return text


def fill_placeholders(text: str, values: dict[str, str]) -> str:
    """{candidate}, {live} and {version} replaced; any other brace (a JSON body's) left as it is."""
    for name, value in values.items():
        text = text.replace(f"{{{name}}}", value)
    return text


def find_config(explicit: Path | None) -> Path:
    """The settings file: --config, else $BLUEGREEN_CONFIG, else ./bluegreen.toml."""
    if explicit is not None:
        return explicit
    if os.environ.get("BLUEGREEN_CONFIG"):
        return Path(os.environ["BLUEGREEN_CONFIG"])
    return Path.cwd() / CONFIG_FILENAME


def default_toml() -> str:
    """The commented default settings file that ``bluegreen init`` writes."""
    return resources.files("bluegreen.orchestrator.settings").joinpath("default.toml").read_text()


# -- derived values, shared by the validated model and the cached view ----------------------------
class _Located(Protocol):
    @property
    def root(self) -> Path: ...
    @property
    def state(self) -> Any: ...
    @property
    def database(self) -> Any: ...
    @property
    def environments(self) -> Any: ...
    @property
    def project(self) -> str: ...


class DerivedPaths:
    """Paths and names computed from the settings; relative paths resolve against ``root``."""

    @property
    def state_dir(self: _Located) -> Path:
        return self.root / self.state.dir  # type: ignore[no-any-return]

    @property
    def sqlite_path(self: _Located) -> Path | None:
        url = str(self.database.url)
        if not url.startswith("sqlite:///"):  # PostgreSQL, or no application database
            return None
        return self.root / url[len("sqlite:///") :]

    def image_ref(self: _Located, version: str) -> str:
        return f"{self.environments.image}:{version}"

    def container_name(self: _Located, color: str) -> str:
        return f"{self.project}-{color}"


class _Coloured(Protocol):
    @property
    def blue(self) -> Any: ...
    @property
    def green(self) -> Any: ...


class ColorLookup:
    """``environments.color("blue")``: a colour's own section by name."""

    def color(self: _Coloured, name: str) -> Any:
        return self.blue if name == "blue" else self.green
