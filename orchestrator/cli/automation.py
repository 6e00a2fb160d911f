"""Commands for automation and the whole story: serve (API, dashboard, scheduler), drill, demo,
monitor."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bluegreen.orchestrator.cli.app import OPTIONS, JsonOpt, app, current_deployment, emit, show_progress


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default: serve.host, "
                    "127.0.0.1).", show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: serve.port, 9900).",
                    show_default=False, min=1, max=65535)] = None,
) -> None:
    """Run the API (rollback, alerts, drills, status, metrics) and the scheduler until stopped."""
    from bluegreen.orchestrator.api.server import serve as run
    from bluegreen.orchestrator.settings.model import load_settings

    run(load_settings(OPTIONS.config), host, port)  # validated afresh: the token is a secret, never cached


@app.command()
def drill(as_json: JsonOpt = False) -> None:
    """Prove now that rollback and restore work, and measure how long recovery takes (RTO)."""
    from bluegreen.orchestrator.automation.drill import drill as do_drill
    from bluegreen.orchestrator.errors import DrillFailed

    OPTIONS.json = as_json
    report = do_drill(current_deployment(), progress=show_progress)
    if as_json:
        emit(report.to_dict())
    else:
        typer.echo(report.summary())
    if not report.ok:
        raise DrillFailed(report.summary(), "bluegreen history --limit 3   (runbooks/drills.md)")


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the scratch deployment, serve and its dashboard "
                                       "running, and print where they are.")] = False,
    fleet: Annotated[bool, typer.Option("--fleet", help="Three deployments behind one proxy and one serve: each "
                                        "released, then an alert that rolls back exactly one of them.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the whole story in a scratch deployment with its own ports: releases, a faulty one rolled back,
    a killed colour, an alert, a drill; then a summary of figures measured in this run."""
    from bluegreen.orchestrator.errors import BluegreenError

    OPTIONS.json = as_json
    summary: Any
    if fleet:
        from bluegreen.orchestrator.demo.fleet import fleet_demo

        summary = fleet_demo(keep, lambda line: typer.echo(line, err=True))
    else:
        from bluegreen.orchestrator.demo import demo as run_demo

        summary = run_demo(keep, lambda line: typer.echo(line, err=True))
    if as_json:
        emit(summary.to_dict())
    else:
        typer.echo(summary.table())
    if not summary.ok:
        raise BluegreenError("the demo saw problems: " + "; ".join(summary.problems),
                             "the lines above say where; bluegreen demo --keep leaves the deployment to look at")


@app.command()
def monitor(as_json: JsonOpt = False) -> None:
    """Show the live and the previous version's quality on labelled predictions now (changes nothing)."""
    from bluegreen.orchestrator.automation.monitor import check

    OPTIONS.json = as_json
    report = check(current_deployment(), act=False)
    if as_json:
        emit(report.to_dict())
        return
    for fig in (report.live, report.previous):
        if fig is not None:
            text = ", ".join(f"{k} {v:.4f}" for k, v in fig.metrics.items()) or "no labelled predictions"
            typer.echo(f"{fig.version}: {fig.labelled} labelled ({fig.source}): {text}")
    typer.echo(f"verdict: {report.verdict}" + (f" ({'; '.join(report.reasons)})" if report.reasons else ""))
