"""Commands that judge model servers: doctor (a colour against the model contract) and compare (two
images side by side)."""

from __future__ import annotations

from typing import Annotated

import typer

from bluegreen.orchestrator.cli.app import OPTIONS, JsonOpt, app, current_deployment, emit, show_progress
from bluegreen.orchestrator.cli.completers import colours


@app.command()
def doctor(
    color: Annotated[str | None, typer.Argument(help="blue or green (default: the live colour).",
                                                autocompletion=colours, show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Probe a running colour against the model contract: ready, version, predictions, metrics, replay."""
    from bluegreen.orchestrator.analysis.doctor import diagnose, render
    from bluegreen.orchestrator.errors import ContractError
    from bluegreen.orchestrator.settings.core import COLORS

    OPTIONS.json = as_json
    if color is not None and color not in COLORS:
        raise typer.BadParameter(f"{color!r} is not a colour; use blue or green", param_hint="COLOR")
    result = diagnose(current_deployment(), color)
    if as_json:
        emit(result.to_dict())
    else:
        for line in render(result):
            typer.echo(line)
    if not result.ok:
        failed = ", ".join(c.name for c in result.checks if c.outcome == "FAIL")
        raise ContractError(f"{result.color} does not match the model contract: {failed}",
                            "fix the [model] keys named above   (runbooks/model-contract.md)")


@app.command()
def compare(
    image_a: Annotated[str, typer.Argument(metavar="A", help="An image, e.g. bluegreen-model:v1.")],
    image_b: Annotated[str, typer.Argument(metavar="B", help="Another image, e.g. bluegreen-model:v2.")],
    as_json: JsonOpt = False,
) -> None:
    """Run two versions in scratch containers and compare them on the holdout and replayed requests."""
    from bluegreen.orchestrator.analysis.compare import compare as do_compare

    OPTIONS.json = as_json
    result = do_compare(current_deployment(), image_a, image_b, progress=show_progress)
    if as_json:
        emit(result.to_dict())
        return
    typer.echo(f"{result.task} on {result.holdout} ({result.rows} rows)")
    typer.echo(f"{'metric':<10} {'A':>10} {'B':>10}  better")
    for name, pair in result.metrics.items():
        typer.echo(f"{name:<10} {pair['a']:>10.4f} {pair['b']:>10.4f}  {result.better[name]}")
    r = result.replay
    if r.get("skipped"):
        typer.echo(f"replay skipped: {r['skipped']}")
    else:
        what = "disagree" if r["task"] == "classification" else "mean absolute difference"
        typer.echo(f"replay of {r['requests']} recorded requests: {r['difference']:.1%} {what}")
    typer.echo(f"A = {result.a}, B = {result.b}; {result.seconds:.1f}s, scratch containers removed")
