"""The ``bluegreen`` command: parse, call one core function, render its result.

Errors are shown once, here: ``Error: …`` / ``Try: …`` on stderr (or a JSON object on stdout
with ``--json``), with the error's exit code; a traceback only with ``--verbose``.
Heavy libraries (docker, httpx, rich, pydantic) are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bluegreen.orchestrator.errors import BluegreenError

if TYPE_CHECKING:
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.status import Status


@dataclass
class Options:
    config: Path | None = None
    verbose: bool = False
    json: bool = False
    deployments: list[Deployment] = field(default_factory=list)


OPTIONS = Options()

app = typer.Typer(
    name="bluegreen",
    help="Blue/green releases of ML model servers: two Docker environments behind HAProxy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
images_app = typer.Typer(help="Build and list the reference model images.", no_args_is_help=True)
app.add_typer(images_app, name="images")
backup_app = typer.Typer(help="Snapshots of the database and config files: create, list, verify, restore, prune.",
                         no_args_is_help=True)
app.add_typer(backup_app, name="backup")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]


@app.callback()
def _global(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings file (default: "
                      "$BLUEGREEN_CONFIG, else ./bluegreen.toml).", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and more detail.")] = False,
) -> None:
    OPTIONS.config = config
    OPTIONS.verbose = verbose


def _deployment() -> Deployment:
    from bluegreen.orchestrator import settings_cache
    from bluegreen.orchestrator.deployment import Deployment

    dep = Deployment(settings_cache.load(OPTIONS.config))
    OPTIONS.deployments.append(dep)
    return dep


def _flush_notifications() -> None:
    """Give queued notifications their chance before the process ends (the work itself is done)."""
    for dep in OPTIONS.deployments:
        notifier = dep.__dict__.get("notifier")
        if notifier is not None:
            notifier.close(wait=dep.settings.notify.timeout)


def _progress(msg: str) -> None:
    # Progress goes to stderr even with --json: stdout stays one clean JSON document. Events without
    # text (a step's start, the analysis samples every 250 ms) are for the API and the dashboard.
    if msg:
        typer.echo(f"  {msg}", err=True)


def _emit(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


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
    from bluegreen.orchestrator.project import init_project

    OPTIONS.json = as_json
    result = init_project(directory, force=force, example=example)
    if as_json:
        _emit(result)
        return
    typer.echo(f"wrote {result['config']}" + (f" and {result['compose']}" if "compose" in result else ""))
    typer.echo(f"next: cd {directory} && bluegreen images build && bluegreen up")


@app.command()
def up(as_json: JsonOpt = False) -> None:
    """Start the proxy and the live colour (blue at first); wait until healthy. Idempotent."""
    from bluegreen.orchestrator.lifecycle import up as do_up

    OPTIONS.json = as_json
    result = do_up(_deployment(), progress=_progress)
    if as_json:
        _emit(result.to_dict())
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
    from bluegreen.orchestrator.status import status as do_status

    OPTIONS.json = as_json
    result = do_status(_deployment())
    if as_json:
        _emit(result.to_dict())
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
    from bluegreen.orchestrator.lifecycle import down as do_down

    OPTIONS.json = as_json
    result = do_down(_deployment(), progress=_progress)
    if as_json:
        _emit(result.to_dict())
        return
    typer.echo(f"stopped {', '.join(result.stopped)}" if result.stopped else "nothing was running")


@app.command()
def logs(
    color: Annotated[str, typer.Argument(help="blue or green.")],
    tail: Annotated[int, typer.Option("--tail", "-n", help="Lines from the end (0: all).")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
) -> None:
    """Print a colour's container logs."""
    from bluegreen.orchestrator.settings_core import COLORS

    if color not in COLORS:
        raise typer.BadParameter(f"{color!r} is not a colour; use blue or green", param_hint="COLOR")
    dep = _deployment()
    out = sys.stdout.buffer
    for chunk in dep.runtime.logs(color, tail=tail or None, follow=follow):
        out.write(chunk)
        out.flush()


@app.command()
def history(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many entries, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Show every release and rollback with its steps, and the audit log of every action."""
    from bluegreen.orchestrator.journal import Journal

    OPTIONS.json = as_json
    dep = _deployment()
    releases = Journal(dep.state).recent(limit)
    entries = dep.state.history(limit)
    if as_json:
        _emit({"releases": [r.to_dict() for r in releases], "audit": [e.to_dict() for e in entries]})
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
    from bluegreen.orchestrator.settings_core import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} {exc}", param_hint="--bake") from None


@app.command()
def release(
    image: Annotated[str, typer.Argument(help="The image to release, e.g. bluegreen-model:v2.")],
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
    from bluegreen.orchestrator.plan import ReleaseRequest
    from bluegreen.orchestrator.release import plan as make_plan
    from bluegreen.orchestrator.release import release as do_release

    OPTIONS.json = as_json
    # The command line is checked before the settings are read: a typo is named as a typo.
    env_map, step_list, bake_seconds = _parse_env(env or []), _parse_steps(steps), _parse_bake(bake)
    dep = _deployment()
    rs = dep.settings.release
    request = ReleaseRequest(image=image, version=version, env=env_map,
                             steps=step_list or list(rs.steps),
                             bake=rs.bake if bake_seconds is None else bake_seconds,
                             migrations=str(migrations.resolve()) if migrations else None,
                             migrate_up=migrate_up, migrate_down=migrate_down, only=only)
    if dry_run:
        the_plan = make_plan(dep, request)
        if as_json:
            _emit({"dry_run": True, "plan": the_plan.to_dict()})
        else:
            typer.echo("\n".join(the_plan.describe()))
            typer.echo("(dry run: nothing changed)")
        return
    _install_sigterm()
    result = do_release(dep, request, progress=_progress)
    if as_json:
        _emit(result.to_dict())
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
                  "rules-based fallback (default: the previous version).", show_default=False)] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the history.")] = "",
    only: Annotated[str | None, typer.Option("--only", help="A colour of several services: roll back only this "
                    "one. The API: traffic goes back, the workers keep their versions; a worker: its previous "
                    "version on the live colour.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send all traffic back to the previous version now (instant while its colour is warm)."""
    from bluegreen.orchestrator.rollback import rollback as do_rollback

    OPTIONS.json = as_json
    dep = _deployment()
    if only is not None:
        from bluegreen.orchestrator.release import check_only

        check_only(dep, only)
        if only != dep.settings.environments.service:
            from bluegreen.orchestrator.workers import rollback_worker

            done = rollback_worker(dep, only, progress=_progress)
            if as_json:
                _emit(done)
                return
            typer.echo(f"rolled back {only}: {done['live']} runs {done['version']} (was {done['from']}), "
                       f"{done['seconds']:.1f}s")
            return
    result = do_rollback(dep, to, reason, progress=_progress, only=only)
    if as_json:
        _emit(result.to_dict())
        return
    how = "switched at once (warm)" if result.warm else "started and gated first"
    typer.echo(f"rolled back: {result.live} serves {result.version} ({result.variant}); {how}, "
               f"{result.seconds:.2f}s")
    for note in result.notes:
        typer.echo(note)


@app.command()
def promote(as_json: JsonOpt = False) -> None:
    """Ask the release in progress to skip its remaining steps and promote now."""
    _ask_release("promote", as_json)


@app.command()
def abort(as_json: JsonOpt = False) -> None:
    """Stop the release in progress (from any terminal): traffic returns to the serving colour."""
    _ask_release("abort", as_json)


def _ask_release(what: str, as_json: bool) -> None:
    from bluegreen.orchestrator.rollback import request

    OPTIONS.json = as_json
    rec = request(_deployment(), what, progress=_progress)
    if as_json:
        _emit(rec.to_dict())
        return
    typer.echo(f"release {rec.id} of {rec.version}: {rec.status}" + (f" ({rec.reason})" if rec.reason else ""))


@app.command()
def recover(as_json: JsonOpt = False) -> None:
    """Finish a release or rollback cut short by a crash, and bring the live colour up healthy."""
    from bluegreen.orchestrator.rollback import recover as do_recover

    OPTIONS.json = as_json
    result = do_recover(_deployment(), progress=_progress)
    if as_json:
        _emit(result.to_dict())
        return
    for note in result.notes or ["nothing was interrupted"]:
        typer.echo(note)
    typer.echo(f"{result.live} is live with {result.image}")


@app.command()
def retire(as_json: JsonOpt = False) -> None:
    """Stop the warm previous colour now instead of at the end of its window."""
    from bluegreen.orchestrator.rollback import retire_now

    OPTIONS.json = as_json
    color = retire_now(_deployment(), progress=_progress)
    if as_json:
        _emit({"retired": color})
        return
    typer.echo(f"retired {color}" if color else "nothing warm to retire")


@app.command()
def doctor(
    color: Annotated[str | None, typer.Argument(help="blue or green (default: the live colour).",
                                                show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Probe a running colour against the model contract: ready, version, predictions, metrics, replay."""
    from bluegreen.orchestrator.doctor import diagnose, render
    from bluegreen.orchestrator.errors import ContractError
    from bluegreen.orchestrator.settings_core import COLORS

    OPTIONS.json = as_json
    if color is not None and color not in COLORS:
        raise typer.BadParameter(f"{color!r} is not a colour; use blue or green", param_hint="COLOR")
    result = diagnose(_deployment(), color)
    if as_json:
        _emit(result.to_dict())
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
    from bluegreen.orchestrator.compare import compare as do_compare

    OPTIONS.json = as_json
    result = do_compare(_deployment(), image_a, image_b, progress=_progress)
    if as_json:
        _emit(result.to_dict())
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


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default: serve.host, "
                    "127.0.0.1).", show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: serve.port, 9900).",
                    show_default=False, min=1, max=65535)] = None,
) -> None:
    """Run the API (rollback, alerts, drills, status, metrics) and the scheduler until stopped."""
    from bluegreen.orchestrator.serve import serve as run
    from bluegreen.orchestrator.settings import load_settings

    run(load_settings(OPTIONS.config), host, port)  # validated afresh: the token is a secret, never cached


@app.command()
def drill(as_json: JsonOpt = False) -> None:
    """Prove now that rollback and restore work, and measure how long recovery takes (RTO)."""
    from bluegreen.orchestrator.drill import drill as do_drill
    from bluegreen.orchestrator.errors import DrillFailed

    OPTIONS.json = as_json
    report = do_drill(_deployment(), progress=_progress)
    if as_json:
        _emit(report.to_dict())
    else:
        typer.echo(report.summary())
    if not report.ok:
        raise DrillFailed(report.summary(), "bluegreen history --limit 3   (runbooks/drills.md)")


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the scratch deployment, serve and its dashboard "
                                       "running, and print where they are.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the whole story in a scratch deployment with its own ports: releases, a faulty one rolled back,
    a killed colour, an alert, a drill; then a summary of figures measured in this run."""
    from bluegreen.orchestrator.demo import demo as run_demo
    from bluegreen.orchestrator.errors import BluegreenError

    OPTIONS.json = as_json
    summary = run_demo(keep, lambda line: typer.echo(line, err=True))
    if as_json:
        _emit(summary.to_dict())
    else:
        typer.echo(summary.table())
    if not summary.ok:
        raise BluegreenError("the demo saw problems: " + "; ".join(
            summary.problems or [f"{summary.failed_requests} failed requests, {summary.rows_lost} rows lost, "
                                 f"{summary.jobs_failed} jobs refused, {summary.jobs_lost} lost, "
                                 f"{summary.jobs_done_twice} taken twice"]),
            "the lines above say where; bluegreen demo --keep leaves the deployment to look at")


@app.command()
def monitor(as_json: JsonOpt = False) -> None:
    """Show the live and the previous version's quality on labelled predictions now (changes nothing)."""
    from bluegreen.orchestrator.monitor import check

    OPTIONS.json = as_json
    report = check(_deployment(), act=False)
    if as_json:
        _emit(report.to_dict())
        return
    for fig in (report.live, report.previous):
        if fig is not None:
            text = ", ".join(f"{k} {v:.4f}" for k, v in fig.metrics.items()) or "no labelled predictions"
            typer.echo(f"{fig.version}: {fig.labelled} labelled ({fig.source}): {text}")
    typer.echo(f"verdict: {report.verdict}" + (f" ({'; '.join(report.reasons)})" if report.reasons else ""))


@backup_app.command("create")
def backup_create(
    reason: Annotated[str, typer.Option("--reason", help="Why, kept in the manifest.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Snapshot the database and the config files into a new backup set."""
    from bluegreen.orchestrator import snapshots

    OPTIONS.json = as_json
    backup = snapshots.create(_deployment(), reason, progress=_progress)
    if as_json:
        _emit(backup.to_dict())
        return
    db = backup.manifest["database"]
    what = ("no application database" if db["engine"] == "none" else
            f"{db['engine']} {sum(db['row_counts'].values())} rows in {len(db['row_counts'])} tables")
    typer.echo(f"backup set {backup.id}: {what}, {len(backup.manifest['files'])} files")


@backup_app.command("list")
def backup_list(as_json: JsonOpt = False) -> None:
    """List the backup sets, newest first."""
    OPTIONS.json = as_json
    sets = _deployment().backups.all_sets()
    if as_json:
        _emit([s.to_dict() for s in sets])
        return
    for s in sets:
        m = s.manifest
        size = sum(f["size"] for f in m["files"])
        typer.echo(f"{s.id}  {m['kind']:<8} {m['database']['engine']:<10} {size / 1e6:8.2f} MB  "
                   f"{'verified' if s.verified_at else 'unverified':<10}  {m['reason']}")
    if not sets:
        typer.echo("no backup sets yet: bluegreen backup create")


@backup_app.command("verify")
def backup_verify(
    set_id: Annotated[str, typer.Argument(metavar="ID", help="A set from bluegreen backup list.")],
    as_json: JsonOpt = False,
) -> None:
    """Re-hash a set's files and restore its database into a scratch copy to check it."""
    from bluegreen.orchestrator import snapshots

    OPTIONS.json = as_json
    report = snapshots.verify(_deployment(), set_id, progress=_progress)
    if as_json:
        _emit(report.to_dict())
    elif report.ok:
        typer.echo(f"{set_id}: verified (hashes, integrity and row counts match the manifest)")
    if not report.ok:
        from bluegreen.orchestrator.errors import BackupError

        raise BackupError(f"backup set {set_id} failed verification: " + "; ".join(report.problems),
                          "bluegreen backup list   (use another set)")


@backup_app.command("restore")
def backup_restore(
    set_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="A set from bluegreen backup list.",
                                                 show_default=False)] = None,
    at: Annotated[str | None, typer.Option("--at", help="A moment of the continuous archive (ISO 8601, e.g. "
                  "2026-11-25T14:03:00Z); needs backups.pitr.", show_default=False)] = None,
    before_release: Annotated[int | None, typer.Option("--before-release", help="The restore point taken as this "
                              "release began; needs backups.pitr.", show_default=False)] = None,
    into: Annotated[str | None, typer.Option("--into", help="With --at/--before-release: write the restored "
                    "database to this new SQLite file, or new PostgreSQL database on the live server, and compare "
                    "it with live (live data is untouched). Without it, the moment replaces live (--yes).",
                    show_default=False)] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a set's database and config (after a safety snapshot), or a moment of the archive into a file."""
    from bluegreen.orchestrator import snapshots

    OPTIONS.json = as_json
    if at is not None or before_release is not None:
        if set_id is not None or (at is not None and before_release is not None):
            raise typer.BadParameter("give one of ID, --at or --before-release", param_hint="ID")
        dep = _deployment()
        if into is None:
            if not yes and not sys.stdin.isatty():
                raise typer.BadParameter("restoring a moment in place replaces the live database; pass --yes to "
                                         "confirm, or --into NEW to look at it first", param_hint="--yes")
            if not yes:
                typer.confirm(f"Replace the live database with its state as of "
                              f"{at or f'release {before_release}'}? (a safety snapshot is taken first)", abort=True)
        elif dep.settings.sqlite_path is not None:
            into = str(Path(into).resolve())
        report = snapshots.restore_to_point(dep, into, at=at, release_id=before_release, progress=_progress)
        if as_json:
            _emit(report)
            return
        if into is None:
            typer.echo(f"restored the database as of {report['as_of']} in place (set {report['set']}); the state "
                       f"before the restore is in safety set {report['safety']}")
            return
        typer.echo(f"restored the database as of {report['as_of']} into {report['into']} (live is untouched)")
        for table, n in report["rows"].items():
            typer.echo(f"  {table}: {n} rows (live: {report['live_rows'].get(table, 'absent')})")
        for table, diff in report["schema_differences"].items():
            typer.echo(f"  {table}: columns only in the copy {diff['only_restored']}, only live {diff['only_live']}")
        return
    if set_id is None:
        raise typer.BadParameter("name a backup set (bluegreen backup list), or --at / --before-release",
                                 param_hint="ID")
    if into is not None:
        raise typer.BadParameter("--into goes with --at or --before-release", param_hint="--into")
    if not yes and not sys.stdin.isatty():
        raise typer.BadParameter("restoring replaces the live database; pass --yes to confirm",
                                 param_hint="--yes")
    dep = _deployment()
    if not yes:
        typer.confirm(f"Replace the live database with backup {set_id}? (a safety snapshot is taken first)",
                      abort=True)
    restored, safety = snapshots.restore(dep, set_id, progress=_progress)
    if as_json:
        _emit({"restored": restored.id, "safety": safety.id})
        return
    typer.echo(f"restored {restored.id}; the state before the restore is in safety set {safety.id}")


@backup_app.command("prune")
def backup_prune(
    keep: Annotated[int | None, typer.Option("--keep", help="How many sets to keep (default: backups.keep).",
                    show_default=False, min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old backup sets, keeping the newest N and always the newest verified one."""
    from bluegreen.orchestrator import snapshots

    OPTIONS.json = as_json
    removed = snapshots.prune(_deployment(), keep)
    if as_json:
        _emit({"removed": removed})
        return
    typer.echo(f"removed {len(removed)} sets" + (": " + ", ".join(removed) if removed else ""))


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
    dep = _deployment_or_defaults()
    s = dep.settings
    repositories = list(REFERENCE) if every else [repository or s.environments.image]
    repositories += [r for r in EXAMPLES if examples and r not in repositories]
    results = []
    for repo in repositories:
        results += build_images(dep.engine, repo, tag or s.images.tags,
                                base=s.images.base if base is None else base, force=force, progress=_progress)
    if every:  # the supervised proxy's image, which has one tag
        results += build_images(dep.proxy_engine, PROXY, ["latest"], base=s.images.base if base is None else base,
                                force=force, progress=_progress)
    if as_json:
        _emit([{"image": r.ref, "id": r.id, "built": r.built} for r in results])
        return
    for r in results:
        typer.echo(f"{r.ref}  {r.id}  {'built' if r.built else 'already present'}")


def _deployment_or_defaults() -> Deployment:
    """Image builds work before `bluegreen init`: without a settings file they use the defaults."""
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.settings import Settings
    from bluegreen.orchestrator.settings_core import find_config

    if OPTIONS.config is None and not find_config(None).exists():
        return Deployment(Settings())
    return _deployment()


def main() -> None:
    """Console entry point: run the app and turn every error into one message and an exit code.

    Typer's own usage errors (a bad option value, a missing argument) are rendered in the same
    ``Error: … / Try: …`` shape as ours, so operators and scripts read one format.
    """
    _register_only_the_invoked_command(sys.argv[1:])
    try:
        code = _run()
    finally:
        _flush_notifications()
    sys.exit(code)


def _run() -> int:
    try:
        code = app(standalone_mode=False, prog_name="bluegreen")
    except BluegreenError as exc:
        if OPTIONS.verbose:
            import traceback

            traceback.print_exc()
        if OPTIONS.json:
            typer.echo(json.dumps(exc.to_dict(), indent=2))
        else:
            typer.echo(f"Error: {exc.message}", err=True)
            typer.echo(f"Try: {exc.hint}", err=True)
        return exc.exit_code
    except typer.TyperException as exc:
        return _usage_error(exc)
    except typer.Abort:
        typer.echo("Aborted: nothing was changed.", err=True)
        return 1
    except KeyboardInterrupt:
        code = 130
    if code == 130:  # Typer turns Ctrl-C into exit code 130
        typer.echo("Interrupted.", err=True)
    return code if isinstance(code, int) else 0


def _register_only_the_invoked_command(argv: list[str]) -> None:
    """Leave registered only the top-level command this process runs, when argv names one.

    Typer turns every registered command into a Click command on every run, about 1.5 ms each;
    `bluegreen rollback` needs only its own, and a rollback is timed by the people waiting for
    it. Help, groups, and anything not plainly one known command keep the whole app.
    """
    name = None
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--config", "-c"):
            skip = True
        elif not token.startswith("-"):
            name = token
            break
    if name is None:
        return
    matching = [c for c in app.registered_commands
                if (c.name or typer.main.get_command_name(c.callback.__name__ if c.callback else "")) == name]
    if len(matching) == 1:
        app.registered_commands = matching
        app.registered_groups = []


def _usage_error(exc: typer.TyperException) -> int:
    """Show a command-line usage error as ``Error: … / Try: <command> --help``; its exit code."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":
        return 2  # the help was printed already: a bare group asks for it
    command = ctx.command_path if ctx is not None else "bluegreen"
    if OPTIONS.json:
        typer.echo(json.dumps({"error": "UsageError", "message": exc.format_message(),
                               "hint": f"{command} --help", "exit_code": 2}, indent=2))
    else:
        typer.echo(f"Error: {exc.format_message()}", err=True)
        typer.echo(f"Try: {command} --help", err=True)
    return int(getattr(exc, "exit_code", 2))
