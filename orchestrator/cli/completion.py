"""``bluegreen completion bash|zsh|fish``: prints (or installs) the script that makes the shell ask
``bluegreen`` for completions (a run with ``_BLUEGREEN_COMPLETE`` set, for which ``app.main`` keeps
every command registered); the values offered come from ``completers.py``."""

from __future__ import annotations

from typing import Annotated

import typer

from bluegreen.orchestrator.cli.app import app

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_BLUEGREEN_COMPLETE"


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
