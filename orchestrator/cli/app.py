"""The Typer app, its global options, and how every command's result and error are shown.

Errors are shown once, here: ``Error: …`` / ``Try: …`` on stderr (or a JSON object on stdout
with ``--json``), with the error's exit code; a traceback only with ``--verbose``. With ``--json``
stdout holds one document: a command that printed its own (a failed drill, demo, verification)
and then fails shows the error on stderr only. The commands
live in the modules beside this one, one per group; each parses, calls one core function and
renders its result. Heavy libraries (docker, httpx, rich, pydantic) are imported inside the
commands that use them.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bluegreen.orchestrator.cli.completers import fleet_members
from bluegreen.orchestrator.errors import BluegreenError

if TYPE_CHECKING:
    from bluegreen.orchestrator.deployment import Deployment


@dataclass
class Options:
    config: Path | None = None
    deployment: str | None = None
    fleet: Path | None = None
    verbose: bool = False
    json: bool = False
    emitted: bool = False  # a --json document is on stdout: an error after it goes to stderr, not a second one
    deployments: list[Deployment] = field(default_factory=list)


OPTIONS = Options()


app = typer.Typer(
    name="bluegreen",
    help="Blue/green releases of ML model servers: two Docker environments behind HAProxy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]


@app.callback()
def _global(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Settings file (default: "
                      "$BLUEGREEN_CONFIG, else ./bluegreen.toml).", show_default=False)] = None,
    deployment: Annotated[str | None, typer.Option("--deployment", "-d", help="A deployment of the fleet, by name: "
                          "the command acts on it from any directory.", show_default=False,
                          autocompletion=fleet_members)] = None,
    fleet: Annotated[Path | None, typer.Option("--fleet", help="The fleet file (default: $BLUEGREEN_FLEET, else "
                     "~/.config/bluegreen/fleet.toml).", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and more detail.")] = False,
) -> None:
    OPTIONS.config = config
    OPTIONS.deployment = deployment
    OPTIONS.fleet = fleet
    OPTIONS.verbose = verbose


def current_deployment() -> Deployment:
    """The deployment a command acts on: ``-d NAME`` of the fleet, else the settings file's (a member of
    the fleet when the fleet file lists its directory)."""
    from bluegreen.orchestrator.deployment import Deployment
    from bluegreen.orchestrator.settings import cache as settings_cache
    from bluegreen.orchestrator.settings.fleet import find_fleet, load_fleet

    fleet_path = find_fleet(OPTIONS.fleet)
    if OPTIONS.deployment is not None:
        if OPTIONS.config is not None:
            raise typer.BadParameter("give -d NAME (a deployment of the fleet) or -c FILE, not both",
                                     param_hint="--deployment")
        from bluegreen.orchestrator.core.fleet import member_settings

        fleet = load_fleet(fleet_path)
        member = fleet.member(OPTIONS.deployment)
        dep = Deployment(member_settings(fleet, member), None, (fleet, member))
    else:
        settings = settings_cache.load(OPTIONS.config)
        membership = None
        if fleet_path.exists():
            fleet = load_fleet(fleet_path)
            at = fleet.member_at(settings.root)
            membership = (fleet, at) if at is not None else None
        dep = Deployment(settings, None, membership)
    OPTIONS.deployments.append(dep)
    return dep


def current_fleet() -> Any:
    """The fleet file the command names (--fleet, $BLUEGREEN_FLEET, ~/.config/bluegreen/fleet.toml), loaded."""
    from bluegreen.orchestrator.settings.fleet import find_fleet, load_fleet

    return load_fleet(find_fleet(OPTIONS.fleet))


def _flush_notifications() -> None:
    """Give queued notifications their chance before the process ends (the work itself is done)."""
    for dep in OPTIONS.deployments:
        notifier = dep.__dict__.get("notifier")
        if notifier is not None:
            notifier.close(wait=dep.settings.notify.timeout)


def show_progress(msg: str) -> None:
    # Progress goes to stderr even with --json: stdout stays one clean JSON document. Events without
    # text (a step's start, the analysis samples every 250 ms) are for the API and the dashboard.
    if msg:
        typer.echo(f"  {msg}", err=True)


def emit(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))
    OPTIONS.emitted = True


def main() -> None:
    """Console entry point: run the app and turn every error into one message and an exit code.

    Typer's own usage errors (a bad option value, a missing argument) are rendered in the same
    ``Error: … / Try: …`` shape as ours, so operators and scripts read one format.
    """
    if os.environ.get("_BLUEGREEN_COMPLETE"):  # a shell asks for completions: every command must be there
        from typer.completion import completion_init  # type: ignore[attr-defined]

        register()
        completion_init()  # Typer's bash, zsh and fish protocols (the scripts `bluegreen completion` prints)
    else:
        name = _invoked(sys.argv[1:])
        register(name)
        _register_only_the_invoked_command(name)
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
        if OPTIONS.json and not OPTIONS.emitted:
            typer.echo(json.dumps(exc.to_dict(), indent=2))
        else:  # with --json after the command's own document (which says what went wrong): one document only
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


# The modules that register commands, in the order `bluegreen --help` lists them, with the top-level
# names each registers (tests/unit/test_docs.py keeps the two in step).
COMMAND_MODULES = {
    "lifecycle": ("init", "up", "status", "down", "logs"),
    "releases": ("history", "release", "rollback", "promote", "abort", "recover", "retire"),
    "models": ("doctor", "compare"),
    "automation": ("serve", "drill", "demo", "monitor"),
    "completion": ("completion",),
    "images": ("images",),
    "backups": ("backup",),
    "fleet": ("fleet",),
}


def register(name: str | None = None) -> None:
    """Register the commands: only the module that holds ``name``, or (no name, or an unknown one) all.

    A rollback is timed by the people waiting for it: it need not load the modules of other commands.
    """
    import importlib

    modules = [m for m, names in COMMAND_MODULES.items() if name in names]
    for module in modules or COMMAND_MODULES:
        importlib.import_module(f"bluegreen.orchestrator.cli.{module}")


def _invoked(argv: list[str]) -> str | None:
    """The top-level command argv names, if it plainly names one."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--config", "-c", "--deployment", "-d", "--fleet"):
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def _register_only_the_invoked_command(name: str | None) -> None:
    """Leave registered only the top-level command this process runs, when argv names one.

    Typer turns every registered command into a Click command on every run, about 1.5 ms each;
    `bluegreen rollback` needs only its own, and a rollback is timed by the people waiting for
    it. Help, groups, and anything not plainly one known command keep the whole app.
    """
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
