"""Commands that move traffic between versions: release, rollback, promote, abort, recover, retire,
and the history of them all."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bluegreen.orchestrator.cli.app import OPTIONS, JsonOpt, app, current_deployment, emit, show_progress
from bluegreen.orchestrator.cli.completers import images, versions


@app.command()
def history(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many entries, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Show every release and rollback with its steps, and the audit log of every action."""
    from bluegreen.orchestrator.state.journal import Journal

    OPTIONS.json = as_json
    dep = current_deployment()
    releases = Journal(dep.state).recent(limit)
    entries = dep.state.history(limit)
    if as_json:
        emit({"releases": [r.to_dict() for r in releases], "audit": [e.to_dict() for e in entries]})
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    for r in releases:
        took = "" if r.duration_s is None else f"  {r.duration_s:.1f}s"
        console.print(f"[bold]{r.kind} {r.id}[/]  {r.started_at}  {escape(r.actor)}  "
                      f"{r.from_version} → {r.version}  {r.from_color} → {r.to_color}  [bold]{r.status}[/]{took}")
        marks = {"done": "ok", "skipped": "skipped", "failed": "FAILED", "started": "cut short"}
        console.print("    " + "  ".join(f"{s.name} {marks.get(s.outcome, s.outcome)}" for s in r.steps))
        for c in r.check_results():
            mark = "ok" if c["ok"] else "FAILED"
            console.print(f"    check {escape(c['name'])} ({c['kind']}) at {c['step']}: {mark} {c['seconds']:.2f}s  "
                          f"{escape(c['detail'])}")
            if c["kind"] == "job" and not c["ok"] and c.get("output"):
                for line in str(c["output"]).strip().splitlines()[-10:]:
                    console.print(f"      {escape(line)}", soft_wrap=True)
        changes = r.plan.get("config_changes") or {}
        if changes:
            console.print("    config release: " + "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items()))
        if r.reason:
            console.print(f"    reason: {escape(r.reason)}")
    if not releases:
        console.print("no releases yet")
    console.print("\n[bold]audit log[/]")
    for e in entries:
        took = "" if e.duration_s is None else f"  {e.duration_s:.2f}s"
        console.print(f"#{e.id}  {e.started_at}  {escape(e.actor)}  {e.action}  [bold]{e.outcome}[/]{took}"
                      + (f"  {escape(e.detail)}" if e.detail else ""))


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair.split('=')[0]!r} must be KEY=VALUE", param_hint="--env")
        env[key] = value
    return env


def _parse_steps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} must be comma-separated percentages such as 10,25,50,100",
                                 param_hint="--steps") from None


def _parse_bake(text: str | None) -> float | None:
    from bluegreen.orchestrator.settings.core import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} {exc}", param_hint="--bake") from None


@app.command()
def release(
    image: Annotated[str, typer.Argument(help="The image to release, e.g. bluegreen-model:v2.",
                                             autocompletion=images)],
    version: Annotated[str | None, typer.Option("--version", help="Version it serves (default: the image "
                       "tag); the health gate checks that /version reports it.", show_default=False)] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the new container "
                   "(repeatable; values are never printed).", show_default=False)] = None,
    steps: Annotated[str | None, typer.Option("--steps", help="Traffic steps in percent, e.g. 10,25,50,100 "
                     "(default: release.steps).", show_default=False)] = None,
    bake: Annotated[str | None, typer.Option("--bake", help="Bake time per step: 30s, 2m, 500ms "
                    "(default: release.bake).", show_default=False)] = None,
    migrations: Annotated[Path | None, typer.Option("--migrations", help="Directory of NNNN_name.up.sql / "
                          "NNNN_name.down.sql files, applied after the snapshot and before any traffic.",
                          show_default=False)] = None,
    migrate_up: Annotated[str | None, typer.Option("--migrate-up", help="Instead of --migrations: a shell "
                          "command run in a one-off container of IMAGE (e.g. 'alembic upgrade head').",
                          show_default=False)] = None,
    migrate_down: Annotated[str | None, typer.Option("--migrate-down", help="The command that undoes "
                            "--migrate-up; without it a failed release restores the snapshot.",
                            show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="A colour of several services (environments.compose): "
                    "release only this one. The API: its traffic moves, the workers keep their versions; a worker: "
                    "replaced on the live colour, no traffic moves.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Release IMAGE into the idle colour: health gate, then shift traffic step by step, then promote."""
    from bluegreen.orchestrator.core.plan import ReleaseRequest
    from bluegreen.orchestrator.core.release import plan as make_plan
    from bluegreen.orchestrator.core.release import release as do_release

    OPTIONS.json = as_json
    # The command line is checked before the settings are read: a typo is named as a typo.
    env_map, step_list, bake_seconds = _parse_env(env or []), _parse_steps(steps), _parse_bake(bake)
    dep = current_deployment()
    rs = dep.settings.release
    request = ReleaseRequest(image=image, version=version, env=env_map,
                             steps=step_list or list(rs.steps),
                             bake=rs.bake if bake_seconds is None else bake_seconds,
                             migrations=str(migrations.resolve()) if migrations else None,
                             migrate_up=migrate_up, migrate_down=migrate_down, only=only)
    if dry_run:
        the_plan = make_plan(dep, request)
        if as_json:
            emit({"dry_run": True, "plan": the_plan.to_dict()})
        else:
            typer.echo("\n".join(the_plan.describe()))
            typer.echo("(dry run: nothing changed)")
        return
    _install_sigterm()
    result = do_release(dep, request, progress=show_progress)
    if as_json:
        emit(result.to_dict())
        return
    typer.echo(f"released {result.version}: {result.to_color} is live ({result.seconds:.1f}s, "
               f"of which baking {result.bake_seconds:.0f}s); {result.from_color} stays warm for rollback")


def _install_sigterm() -> None:
    """SIGTERM (a scheduler or CI cancelling us) ends a release like Ctrl-C: traffic goes back first."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
def rollback(
    to: Annotated[str | None, typer.Option("--to", help="A version from history, or 'baseline' for the "
                  "rules-based fallback (default: the previous version).", show_default=False,
                  autocompletion=versions)] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
    only: Annotated[str | None, typer.Option("--only", help="A colour of several services: roll back only this "
                    "one. The API: traffic goes back, the workers keep their versions; a worker: its previous "
                    "version on the live colour.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send all traffic back to the previous version now (instant while its colour is warm)."""
    from bluegreen.orchestrator.core.rollback import rollback as do_rollback

    OPTIONS.json = as_json
    dep = current_deployment()
    if only is not None:
        from bluegreen.orchestrator.core.release import check_only

        check_only(dep, only)
        if only != dep.settings.environments.service:
            from bluegreen.orchestrator.core.rollback import rollback_worker

            done = rollback_worker(dep, only, progress=show_progress)
            if as_json:
                emit(done)
                return
            typer.echo(f"rolled back {only}: {done['live']} runs {done['version']} (was {done['from']}), "
                       f"{done['seconds']:.1f}s")
            return
    result = do_rollback(dep, to, reason, progress=show_progress, only=only)
    if as_json:
        emit(result.to_dict())
        return
    how = "switched at once (warm)" if result.warm else "started and gated first"
    typer.echo(f"rolled back: {result.live} serves {result.version} ({result.variant}); {how}, "
               f"{result.seconds:.2f}s")
    for note in result.notes:
        typer.echo(note)


@app.command()
def promote(as_json: JsonOpt = False) -> None:
    """Ask the release in progress to skip its remaining steps and promote now; while it waits for an
    approval check, approve that check instead (the release goes on with its steps)."""
    _ask_release("promote", as_json)


@app.command()
def abort(as_json: JsonOpt = False) -> None:
    """Stop the release in progress (from any terminal), or reject the approval it waits for: traffic
    returns to the serving colour."""
    _ask_release("abort", as_json)


def _ask_release(what: str, as_json: bool) -> None:
    from bluegreen.orchestrator.core.rollback import request

    OPTIONS.json = as_json
    dep = current_deployment()
    rec = request(dep, what, progress=show_progress)
    if as_json:
        emit(rec.to_dict())
        return
    if rec.status == "running":  # an approval, taken: the release goes on
        given = rec.approval_by(dep.actor)
        typer.echo(f"release {rec.id} of {rec.version}: " + (
            f"approved {given['name']} at {given['step']}; it goes on" if given else
            f"it no longer waited for approval, so nothing was approved; it is at {rec.step}"))
        return
    typer.echo(f"release {rec.id} of {rec.version}: {rec.status}" + (f" ({rec.reason})" if rec.reason else ""))


@app.command()
def recover(as_json: JsonOpt = False) -> None:
    """Finish a release or rollback cut short by a crash, and bring the live colour up healthy."""
    from bluegreen.orchestrator.core.rollback import recover as do_recover

    OPTIONS.json = as_json
    result = do_recover(current_deployment(), progress=show_progress)
    if as_json:
        emit(result.to_dict())
        return
    for note in result.notes or ["nothing was interrupted"]:
        typer.echo(note)
    typer.echo(f"{result.live} is live with {result.image}")


@app.command()
def retire(as_json: JsonOpt = False) -> None:
    """Stop the warm previous colour now instead of at the end of its window."""
    from bluegreen.orchestrator.core.rollback import retire_now

    OPTIONS.json = as_json
    color = retire_now(current_deployment(), progress=show_progress)
    if as_json:
        emit({"retired": color})
        return
    typer.echo(f"retired {color}" if color else "nothing warm to retire")
