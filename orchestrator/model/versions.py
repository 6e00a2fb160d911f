"""Versions: the tag an image serves, a config release's digest and what it changed. Pure functions."""

from __future__ import annotations

import hashlib
import json

from bluegreen.orchestrator.errors import InvalidRequest


def version_of(image: str, version: str | None) -> str:
    """The version a release names: ``--version``, else the image's tag."""
    if version:
        return version
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":"):
        raise InvalidRequest(f"{image} has no tag to take the version from",
                             "give the image a tag (repo:tag) or pass --version")
    return last.split(":", 1)[1]


def image_version(version: str) -> str:
    """The version an image reports, without a config release's +cfg.<digest>."""
    return version.split("+cfg.")[0]


def config_digest(env: dict[str, str]) -> str:
    """Names a set of settings without showing them: equal settings, equal digest."""
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:8]


def config_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Which keys a config release adds, removes or changes (names only: values may be secrets)."""
    out = {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
           "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k])}
    return {k: v for k, v in out.items() if v}
