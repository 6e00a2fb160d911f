"""The ``bluegreen fleet`` group: the deployments of one host behind one proxy (init, add, remove,
status, up, down). Each member is still addressed by its own commands, from anywhere, with ``-d``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bluegreen.orchestrator.cli.app import OPTIONS, JsonOpt, app, current_fleet, emit, show_progress

fleet_app = typer.Typer(help="Many deployments on one host behind one proxy: init, add, remove, status, up, down.",
                        no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


def _fleet_path() -> Path:
    from bluegreen.orchestrator.settings.fleet import find_fleet

    return find_fleet(OPTIONS.fleet)


@fleet_app.command("init")
def fleet_init(
    path: Annotated[Path | None, typer.Argument(help="Where to write it: a file, or a directory for fleet.toml "
                    "(default: --fleet, $BLUEGREEN_FLEET, else ~/.config/bluegreen/fleet.toml).",
                    show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing fleet file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a commented fleet file: the shared proxy, serve, and the deployments (none yet)."""
    from bluegreen.orchestrator.core.fleet import init

    OPTIONS.json = as_json
    written = init(path or _fleet_path(), force)
    if as_json:
        emit({"fleet": str(written)})
        return
    typer.echo(f"wrote {written}")
    typer.echo(f"next: bluegreen --fleet {written} fleet add DIR --host NAME   (or --prefix /NAME)")


@fleet_app.command("add")
def fleet_add(
    directory: Annotated[Path, typer.Argument(help="The deployment's directory (its bluegreen.toml).")],
    host: Annotated[list[str] | None, typer.Option("--host", help="A Host header routed to it (repeatable).",
                    show_default=False)] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="A path prefix routed to it, e.g. /fraud.")] = "",
    keep_prefix: Annotated[bool, typer.Option("--keep-prefix", help="Send the path as received (default: the "
                           "model server sees /predict, not /fraud/predict).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a deployment: checked against the others (name, route, ports), routed at once if the proxy runs."""
    from bluegreen.orchestrator.core.fleet import add

    OPTIONS.json = as_json
    joined = add(_fleet_path(), directory, host or [], prefix, not keep_prefix, progress=show_progress)
    if as_json:
        emit(joined.to_dict())
        return
    typer.echo(f"{joined.name} joined the fleet: {joined.route} -> {joined.url}; proxy: {joined.proxy}")
    for note in joined.notes:
        typer.echo(note)


@fleet_app.command("remove")
def fleet_remove(
    name: Annotated[str, typer.Argument(help="The deployment's name (bluegreen fleet status lists them).")],
    as_json: JsonOpt = False,
) -> None:
    """Take a deployment out of the fleet (its route goes; its directory, containers and state stay)."""
    from bluegreen.orchestrator.core.fleet import remove

    OPTIONS.json = as_json
    result = remove(_fleet_path(), name, progress=show_progress)
    if as_json:
        emit(result)
        return
    typer.echo(f"removed {name} from the fleet; {result['note']}")


@fleet_app.command("status")
def fleet_status(as_json: JsonOpt = False) -> None:
    """One line per deployment: live version, weights, the proxy's health, release, standby, drill, backup."""
    from bluegreen.orchestrator.core.fleet import status

    OPTIONS.json = as_json
    result = status(current_fleet())
    if as_json:
        emit(result.to_dict())
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    running, of = result.proxy_processes.get("running", 0), result.proxy_processes.get("of", 1)
    state = ("[red]not running[/]" if not result.proxy_running else "running" if running >= of else
             f"[yellow]running, {running} of {of} processes[/] (bluegreen fleet up starts the others)")
    console.print(f"fleet {result.fleet}: {result.proxy} {state}")
    table = Table()
    for col in ("deployment", "route", "live", "weights", "proxy's health", "release", "standby", "last drill",
                "verified backup"):
        table.add_column(col)
    for m in result.members:
        if m.error:
            table.add_row(m.name, m.route, f"[red]{m.error}[/]", "", "", "", "", "", "")
            continue
        weights = " ".join(f"{c} {w}%" for c, w in (m.weights or {}).items()) or "-"
        health = " ".join(f"{c} {h}" for c, h in m.health.items()) or "-"
        table.add_row(m.name, m.route, f"{m.live or '-'} {m.version or ''}", weights, health, m.release or "-",
                      m.standby or "-", m.last_drill or "-", m.newest_verified_backup or "-")
    console.print(table)
    if not result.members:
        console.print("no deployments yet: bluegreen fleet add DIR --host NAME")


@fleet_app.command("up")
def fleet_up(as_json: JsonOpt = False) -> None:
    """Start the shared proxy and every deployment's live colour behind it (one failing stops no other)."""
    from bluegreen.orchestrator.core.fleet import up

    OPTIONS.json = as_json
    result = up(current_fleet(), progress=show_progress)
    if as_json:
        emit(result)
    else:
        for name, r in result.items():
            typer.echo(f"{name}: " + (f"FAILED: {r['error']}" if "error" in r else f"{r['live']} serves "
                                       f"{r['version']} at {r['url']}"))
    _fail_if_any(result)


@fleet_app.command("down")
def fleet_down(as_json: JsonOpt = False) -> None:
    """Stop every deployment's colours, then the shared proxy."""
    from bluegreen.orchestrator.core.fleet import down

    OPTIONS.json = as_json
    result = down(current_fleet(), progress=show_progress)
    if as_json:
        emit(result)
    else:
        for name, r in result.items():
            typer.echo(f"{name}: {r}" if isinstance(r, str) else f"{name}: " + (
                f"FAILED: {r['error']}" if "error" in r else f"stopped {', '.join(r['stopped']) or 'nothing'}"))
    _fail_if_any(result)


def _fail_if_any(result: dict[str, object]) -> None:
    from bluegreen.orchestrator.errors import BluegreenError

    failed = [name for name, r in result.items() if isinstance(r, dict) and "error" in r]
    if failed:
        raise BluegreenError(f"{len(failed)} of the fleet's deployments failed: {', '.join(failed)}",
                             "bluegreen -d NAME status   (runbooks/fleet.md)")


@fleet_app.command("serve")
def fleet_serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default: the fleet file's "
                    "[serve] host).", show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: the fleet file's [serve] port).",
                    show_default=False, min=1, max=65535)] = None,
) -> None:
    """The dashboard, one API, Alertmanager receiver, /metrics and scheduler for every deployment of the fleet,
    until stopped."""
    from bluegreen.orchestrator.api.server import serve_fleet

    serve_fleet(current_fleet(), host, port)
