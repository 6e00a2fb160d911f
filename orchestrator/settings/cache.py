"""Validated settings, remembered so that every later command skips pydantic.

A full load validates ``bluegreen.toml`` and the ``BLUEGREEN_*`` variables with pydantic-settings
(``settings.py``) and writes what it validated to ``<state dir>/settings.json`` (mode 0600, in
the private state directory), with a fingerprint of everything it was made from: the settings
file's path and bytes, the ``BLUEGREEN_*`` variables, and the code that validated them. A later
command whose inputs have the same fingerprint reads that file instead: the same values, nothing
to validate again, and no pydantic import — which costs more than the rest of a rollback.
Anything that changes an input changes the fingerprint, and the settings are validated again;
an unreadable or foreign cache is simply ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bluegreen.orchestrator.settings.core import (
    DEFAULT_STATE_DIR,
    ENV_PREFIX,
    ColorLookup,
    DerivedPaths,
    find_config,
)

if TYPE_CHECKING:
    from bluegreen.orchestrator.settings.model import Settings

CACHE_NAME = "settings.json"
FORMAT = 1
# BLUEGREEN_* variables that are not settings: they never change what the settings are.
NOT_SETTINGS = frozenset({"BLUEGREEN_ACTOR", "BLUEGREEN_CONFIG", "BLUEGREEN_FAULT_CRASH_AT"})
# The modules whose code decides what valid settings are: a change to them is a change of input.
VALIDATING_CODE = ("settings/model.py", "settings/core.py", "settings/cache.py", "model/quality.py",
                   "model/contract.py")


def load(explicit: Path | None = None) -> Settings:
    """The deployment's settings: from the cache when its fingerprint matches, else validated afresh."""
    path = find_config(explicit)
    try:
        raw = path.read_bytes()
    except OSError:
        raw = None  # the full load names the problem
    if raw is not None:
        cached = read(path, raw)
        if cached is not None:
            return cached
    from bluegreen.orchestrator.settings.model import load_settings

    settings = load_settings(path, raw)
    if raw is not None:
        write(settings, path, raw)
    return settings


def fingerprint(path: Path, raw: bytes, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    h = hashlib.sha256(f"format {FORMAT}\0".encode())
    here = Path(__file__).parent.parent  # the orchestrator package
    for name in VALIDATING_CODE:
        st = (here / name).stat()
        h.update(f"{name} {st.st_mtime_ns} {st.st_size}\0".encode())
    h.update(str(path.resolve()).encode() + b"\0" + raw + b"\0")
    for key in sorted(env):
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in NOT_SETTINGS:
            h.update(f"{key}={env[key]}\0".encode())
    return h.hexdigest()


def cache_path(path: Path, raw: bytes) -> Path | None:
    """Where the cache for this settings file lives: its state directory, found without validating."""
    state_dir = next((v for k, v in os.environ.items() if k.upper() == f"{ENV_PREFIX}STATE__DIR"), None)
    if state_dir is None:
        try:
            section = tomllib.loads(raw.decode()).get("state", {})
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            return None
        state_dir = section.get("dir", DEFAULT_STATE_DIR) if isinstance(section, dict) else None
    if not isinstance(state_dir, str):
        return None
    return path.resolve().parent / state_dir / CACHE_NAME


def read(path: Path, raw: bytes) -> Settings | None:
    target = cache_path(path, raw)
    if target is None:
        return None
    try:
        doc = json.loads(target.read_text())
        if doc.get("format") != FORMAT or doc.get("fingerprint") != fingerprint(path, raw):
            return None
        return cast("Settings", _view(doc["settings"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write(settings: Settings, path: Path, raw: bytes) -> None:
    """Remember validated settings; a state directory that cannot be written only costs speed."""
    target = settings.state_dir / CACHE_NAME
    if cache_path(path, raw) != target:
        return  # the state directory came from somewhere the reader cannot see: never cache it
    doc = {"format": FORMAT, "fingerprint": fingerprint(path, raw), "settings": _tree(settings)}
    with contextlib.suppress(OSError):
        from bluegreen.orchestrator.common.private import private_dir

        private_dir(target.parent)
        tmp = target.with_name(f".{CACHE_NAME}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, target)


def _tree(model: Any) -> dict[str, Any]:
    """A validated model as JSON that keeps which values are sections and which are paths."""
    fields: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if hasattr(type(value), "model_fields"):
            fields[name] = {"section": _tree(value)}
        elif isinstance(value, dict) and value and all(hasattr(type(v), "model_fields") for v in value.values()):
            fields[name] = {"sections": {k: _tree(v) for k, v in value.items()}}
        elif isinstance(value, Path):
            fields[name] = {"path": str(value)}
        elif type(value).__name__ == "SecretStr":
            fields[name] = {"value": None}  # secrets are never written down: the commands that need one validate
        elif isinstance(value, list) and value and all(hasattr(type(v), "model_fields") for v in value):
            fields[name] = {"sections_list": [_tree(v) for v in value]}
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            fields[name] = {"paths": [str(v) for v in value]}
        else:
            fields[name] = {"value": value}
    return {"class": type(model).__name__, "fields": fields}


class _View:
    """A read-only section of cached settings: attribute access, like the validated model."""

    def __init__(self, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"settings have no {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are read-only")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._values!r})"


class _SettingsView(_View, DerivedPaths):
    pass


class _EnvironmentsView(_View, ColorLookup):
    pass


_VIEWS: dict[str, type[_View]] = {"Settings": _SettingsView, "EnvironmentsSettings": _EnvironmentsView}


def _view(tree: dict[str, Any]) -> _View:
    values: dict[str, Any] = {}
    for name, node in tree["fields"].items():
        if "section" in node:
            values[name] = _view(node["section"])
        elif "sections" in node:
            values[name] = {k: _view(v) for k, v in node["sections"].items()}
        elif "sections_list" in node:
            values[name] = [_view(v) for v in node["sections_list"]]
        elif "path" in node:
            values[name] = Path(node["path"])
        elif "paths" in node:
            values[name] = [Path(p) for p in node["paths"]]
        else:
            values[name] = node["value"]
    return _VIEWS.get(tree["class"], _View)(values)
