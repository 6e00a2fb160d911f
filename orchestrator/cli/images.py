"""The ``bluegreen images`` group: build the reference model images and the example servers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from bluegreen.orchestrator.cli.app import OPTIONS, JsonOpt, app, current_deployment, emit, show_progress

if TYPE_CHECKING:
    from bluegreen.orchestrator.deployment import Deployment

images_app = typer.Typer(help="Build and list the reference model images.", no_args_is_help=True)
app.add_typer(images_app, name="images")


@images_app.command("build")
def images_build(
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag to build (repeatable; "
                   "default: images.tags).", show_default=False)] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base image (default: images.base, else "
                    "python:3.11-slim, else an offline Debian base).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild tags that already exist.")] = False,
    repository: Annotated[str | None, typer.Option("--repository", help="bluegreen-model (iris classifier) or "
                          "bluegreen-regressor (diabetes regressor); default: environments.image.",
                          show_default=False)] = None,
    every: Annotated[bool, typer.Option("--all", help="Build every reference family.")] = False,
    examples: Annotated[bool, typer.Option("--examples", help="Also build the third-party example servers: "
                        "bluegreen-mlflow (MLflow) and bluegreen-mlserver (MLServer, Open Inference Protocol).")
                        ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build the reference model images, and the example servers, with no registry."""
    from bluegreen.environments.images import EXAMPLES, PROXY, REFERENCE, build_images

    OPTIONS.json = as_json
    dep = deployment_or_defaults()
    s = dep.settings
    repositories = list(REFERENCE) if every else [repository or s.environments.image]
    repositories += [r for r in EXAMPLES if examples and r not in repositories]
    results = []
    for repo in repositories:
        results += build_images(dep.engine, repo, tag or s.images.tags,
                                base=s.images.base if base is None else base, force=force, progress=show_progress)
    if every:  # the supervised proxy's image, which has one tag
        results += build_images(dep.proxy_engine, PROXY, ["latest"], base=s.images.base if base is None else base,
                                force=force, progress=show_progress)
    if as_json:
        emit([{"image": r.ref, "id": r.id, "built": r.built} for r in results])
        return
    for r in results:
        typer.echo(f"{r.ref}  {r.id}  {'built' if r.built else 'already present'}")


def deployment_or_defaults() -> Deployment:
    """Image builds work before `bluegreen init`: without a settings file they use the defaults."""
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.settings.core import find_config
    from bluegreen.orchestrator.settings.model import Settings

    if OPTIONS.config is None and not find_config(None).exists():
        return Deployment(Settings())
    return current_deployment()
