"""What the shell is offered for an argument: colours, versions from the history, backup sets, local images.

Completers read the deployment the command line names (``-c``) and never fail: a deployment that
cannot be read offers nothing. (The scripts that call them: ``completion.py``.)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer


def colours(incomplete: str) -> list[str]:
    return [c for c in ("blue", "green") if c.startswith(incomplete)]


def fleet_members(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """The fleet's deployments, with their routes."""
    from bluegreen.orchestrator.errors import BluegreenError
    from bluegreen.orchestrator.settings.fleet import find_fleet, load_fleet

    given = ctx.find_root().params.get("fleet")
    try:
        fleet = load_fleet(find_fleet(Path(given) if given else None))
    except BluegreenError:
        return []
    return [(m.name, m.describe()) for m in fleet.members if m.name.startswith(incomplete)]


def _settings(ctx: typer.Context) -> Any | None:
    """The deployment's settings from the cache (or validated), or None when there is no readable one."""
    from bluegreen.orchestrator.errors import BluegreenError
    from bluegreen.orchestrator.settings import cache

    root = ctx.find_root().params
    config, name = root.get("config"), root.get("deployment")
    try:
        if name:
            from bluegreen.orchestrator.settings.fleet import find_fleet, load_fleet

            given = root.get("fleet")
            fleet = load_fleet(find_fleet(Path(given) if given else None))
            return cache.load(fleet.directory(fleet.member(name)) / "bluegreen.toml")
        return cache.load(Path(config) if config else None)
    except (BluegreenError, OSError, ValueError):
        return None


def versions(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Every version this deployment has run, newest first, then "baseline"."""
    settings = _settings(ctx)
    out: list[tuple[str, str]] = []
    if settings is not None and (settings.state_dir / "state.db").exists():
        from bluegreen.orchestrator.state.journal import Journal
        from bluegreen.orchestrator.state.store import StateStore

        with contextlib.suppress(Exception):  # a locked or foreign file offers nothing, never a traceback
            out = [(v, image) for v, (image, _env) in Journal(StateStore(settings.state_dir / "state.db")).versions()
                   .items()]
    out.append(("baseline", "the live image's rules-based fallback"))
    return [(v, help_text) for v, help_text in out if v.startswith(incomplete)]


def backup_sets(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """The deployment's backup sets, newest first, with their reason."""
    settings = _settings(ctx)
    if settings is None:
        return []
    from bluegreen.backups.sets import BackupStore, Sources

    with contextlib.suppress(Exception):
        store = BackupStore(settings.root / settings.backups.dir, Sources("", None, {}))
        return [(s.id, s.manifest.get("reason") or s.manifest.get("kind", "")) for s in store.all_sets()
                if s.id.startswith(incomplete)]
    return []


def images(ctx: typer.Context, incomplete: str) -> list[str]:
    """Tagged images on the deployment's engine (one plain API call over its unix socket)."""
    from bluegreen.environments.engine_api import get_json, unix_socket_path

    settings = _settings(ctx)
    socket_path = unix_socket_path(settings.docker.host if settings is not None else "")
    if socket_path is None:  # an ssh:// or tcp:// engine: not worth a connection for a completion
        return []
    with contextlib.suppress(Exception):
        tags = [t for image in get_json(socket_path, "/images/json", 2.0) or [] for t in image.get("RepoTags") or []]
        return sorted(t for t in tags if t.startswith(incomplete) and not t.endswith(":<none>"))
    return []
