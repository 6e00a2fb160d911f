"""Commands that set a deployment up and show it: init, up, status, down, logs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bluegreen.orchestrator.cli.app import OPTIONS, JsonOpt, app, current_deployment, emit, show_progress
from bluegreen.orchestrator.cli.completers import colours

if TYPE_CHECKING:
    from bluegreen.orchestrator.core.status import Status


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write bluegreen.toml.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing bluegreen.toml.")] = False,
    example: Annotated[str | None, typer.Option("--example", help="compose: also write compose.yaml (an api and a "
                       "prediction-consumer, switched together) and point bluegreen.toml at it.",
                       show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a commented bluegreen.toml with the embedded defaults."""
    from bluegreen.orchestrator.settings.project import init_project

    OPTIONS.json = as_json
    result = init_project(directory, force=force, example=example)
    if as_json:
        emit(result)
        return
    typer.echo(f"wrote {result['config']}" + (f" and {result['compose']}" if "compose" in result else ""))
    typer.echo(f"next: cd {directory} && bluegreen images build && bluegreen up")


@app.command()
def up(as_json: JsonOpt = False) -> None:
    """Start the proxy and the live colour (blue at first); wait until healthy. Idempotent."""
    from bluegreen.orchestrator.core.lifecycle import up as do_up

    OPTIONS.json = as_json
    result = do_up(current_deployment(), progress=show_progress)
    if as_json:
        emit(result.to_dict())
        return
    if not result.changed:
        typer.echo(f"already up: {result.live} serves {result.image}")
    else:
        typer.echo(f"{result.live} is live with {result.image} ({result.seconds:.1f}s)")
    typer.echo(f"send requests to {result.url}/predict   e.g.")
    typer.echo(f"  curl -s -X POST {result.url}/predict -d '{{\"features\": [5.1, 3.5, 1.4, 0.2]}}'")


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Show the live colour, the weights the proxy really has, and each colour's container and health."""
    from bluegreen.orchestrator.core.status import status as do_status

    OPTIONS.json = as_json
    result = do_status(current_deployment())
    if as_json:
        emit(result.to_dict())
    else:
        _render_status(result)


def _render_status(s: Status) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    weights = s.weights if s.weights is not None else {}
    proxy = f"{s.proxy_driver} on {s.proxy_url}: " + ("running" if s.proxy_running else "[red]not running[/]")
    console.print(f"[bold]{s.project}[/]  live: [bold]{s.live or '-'}[/]   {proxy}")
    if s.proxy_error:
        console.print(f"[red]proxy: {s.proxy_error}[/]")
    if s.lock:
        console.print(f"lock: held by {s.lock}")
    if s.release:
        r = s.release
        if r["interrupted"]:
            console.print(f"[red]{r['kind']} {r['id']} of {r['version']} was cut short at step {r['step']}[/]: "
                          "run bluegreen recover")
        else:
            console.print(f"{r['kind']} {r['id']} of {r['version']} into {r['to']} in progress: step {r['step']}")
            waiting = r.get("awaiting_approval")
            if waiting:
                import time

                left = max(0, int(float(waiting["until"]) - time.time()))
                console.print(f"[bold]waiting for approval {waiting['check']}[/] ({left}s left, then "
                              f"{waiting['on_timeout']}): bluegreen promote approves, bluegreen abort rejects")
    if s.warm and s.warm.get("color") != s.live:
        import time

        left = max(0, int(float(s.warm["until"]) - time.time()))
        standing = " and stands by for failover" if s.standby == s.warm["color"] else ""
        console.print(f"{s.warm['color']} is kept warm for rollback for {left}s more{standing}")
    for note in s.notes:
        console.print(f"[yellow]{note}[/]")
    table = Table()
    for col in ("colour", "weight", "version", "image", "container", "health"):
        table.add_column(col)
    for color, cs in s.environments.items():
        weight = f"{weights[color]}%" if color in weights else "-"
        health = f"[green]{cs.health}[/]" if cs.healthy else f"[yellow]{cs.health}[/]"
        table.add_row(color + ("*" if color == s.live else ""), weight, cs.version or "-", cs.image or "-",
                      cs.container, health)
    console.print(table)
    if s.workers:
        workers = Table(title="workers (environments.with)")
        for col in ("colour", "service", "version", "container", "health", "restarts"):
            workers.add_column(col)
        for color, states in s.workers.items():
            for w in states:
                workers.add_row(color, w["service"], w["version"] or "-", w["state"], w["health"], str(w["restarts"]))
        console.print(workers)


@app.command()
def down(as_json: JsonOpt = False) -> None:
    """Stop the proxy and both colours (the live colour and version are kept for the next up)."""
    from bluegreen.orchestrator.core.lifecycle import down as do_down

    OPTIONS.json = as_json
    result = do_down(current_deployment(), progress=show_progress)
    if as_json:
        emit(result.to_dict())
        return
    typer.echo(f"stopped {', '.join(result.stopped)}" if result.stopped else "nothing was running")


@app.command()
def logs(
    color: Annotated[str, typer.Argument(help="blue or green.", autocompletion=colours)],
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end (0: all).")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
) -> None:
    """Print a colour's container logs."""
    from bluegreen.orchestrator.settings.core import COLORS

    if color not in COLORS:
        raise typer.BadParameter(f"{color!r} is not a colour; use blue or green", param_hint="COLOR")
    dep = current_deployment()
    out = sys.stdout.buffer
    for chunk in dep.runtime.logs(color, tail=tail or None, follow=follow):
        out.write(chunk)
        out.flush()
