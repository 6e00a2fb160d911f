"""Shell completion: ``bluegreen completion bash|zsh|fish`` prints (or installs) the script, and the
values the shell is offered — colours, versions from the history, backup sets, local images.

A completion request is a run of ``bluegreen`` with ``_BLUEGREEN_COMPLETE`` set; ``app.main`` then
keeps every command registered. The completers read the deployment the command line names (``-c``)
and never fail: a deployment that cannot be read offers nothing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from bluegreen.orchestrator.cli.app import app

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_BLUEGREEN_COMPLETE"


def colours(incomplete: str) -> list[str]:
    return [c for c in ("blue", "green") if c.startswith(incomplete)]


def _settings(ctx: typer.Context) -> Any | None:
    """The deployment's settings from the cache (or validated), or None when there is no readable one."""
    from bluegreen.orchestrator.errors import BluegreenError
    from bluegreen.orchestrator.settings import cache

    config = ctx.find_root().params.get("config")
    try:
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


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", autocompletion=lambda incomplete: [
        s for s in SHELLS if s.startswith(incomplete)])],
    install: Annotated[bool, typer.Option("--install", help="Write the script where the shell reads it, and "
                                          "source it from the shell's start-up file.")] = False,
) -> None:
    """Print the shell completion script (commands, options, colours, versions, backup sets, images)."""
    # Typer's own script templates and installer (typer.completion re-exports them from a private module).
    from typer.completion import get_completion_script  # type: ignore[attr-defined]
    from typer.completion import install as install_script  # type: ignore[attr-defined]

    if shell not in SHELLS:
        raise typer.BadParameter(f"{shell!r} is not a shell bluegreen completes; use bash, zsh or fish",
                                 param_hint="SHELL")
    if install:
        _, path = install_script(shell=shell, prog_name="bluegreen", complete_var=COMPLETE_VAR)
        typer.echo(f"installed {shell} completion in {path}; it takes effect in a new shell")
        return
    typer.echo(get_completion_script(prog_name="bluegreen", complete_var=COMPLETE_VAR, shell=shell))


def requested() -> bool:
    """Whether this process answers a shell's completion request."""
    return bool(os.environ.get(COMPLETE_VAR))
