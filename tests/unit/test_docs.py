"""Docs that cannot drift: every command has help and is in the README; runbook commands parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from bluegreen.orchestrator.cli import register
from bluegreen.orchestrator.cli.app import COMMAND_MODULES, app

REPO = Path(__file__).resolve().parents[2]
register()  # every command, as `bluegreen --help` sees them
ROOT = typer.main.get_command(app)


def all_commands(group: Any = ROOT, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        out.append((path, cmd))
        if hasattr(cmd, "commands"):
            out.extend(all_commands(cmd, path))
    return out


def parse(argv: list[str]) -> None:
    """Parse argv with the real CLI without running anything; raise on a bad command line."""
    ctx = ROOT.make_context("bluegreen", list(argv), resilient_parsing=False)
    cmd: Any = ROOT
    while hasattr(cmd, "commands"):
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]  # the vendored Click keeps them private
        if not args:
            return
        name, sub, rest = cmd.resolve_command(ctx, args)
        assert sub is not None, f"no command {name}"
        ctx = sub.make_context(name, rest, parent=ctx)
        cmd = sub


def documented_commands() -> list[tuple[str, str]]:
    """`bluegreen …` in inline code, and lines starting with bluegreen inside fenced code blocks."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "runbooks").glob("*.md"))]:
        fenced = False
        for line in path.read_text().splitlines():
            if line.strip().startswith("```"):
                fenced = not fenced
                continue
            texts = re.findall(r"`(bluegreen [^`]*)`", line)
            if fenced and line.strip().startswith("bluegreen "):
                texts.append(line.strip().split("#")[0].split("&&")[0].strip())
            found.extend((path.name, t) for t in texts if t != "bluegreen …")
    return found


@pytest.mark.parametrize(("path", "cmd"), all_commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_has_help_text(path: tuple[str, ...], cmd: Any) -> None:
    assert cmd.help and cmd.help.strip(), f"bluegreen {' '.join(path)} has no help"
    for param in cmd.params:
        if isinstance(param, typer.core.TyperOption) and param.name != "help":
            assert param.help, f"bluegreen {' '.join(path)} {param.opts[0]} has no help"


def test_every_command_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    for path, cmd in all_commands():
        if not hasattr(cmd, "commands"):
            assert f"bluegreen {' '.join(path)}" in readme, f"bluegreen {' '.join(path)} is missing from README.md"


def test_the_docs_name_commands_at_all() -> None:
    assert len(documented_commands()) >= 20


@pytest.mark.parametrize(("source", "line"), documented_commands())
def test_every_documented_command_line_parses(source: str, line: str) -> None:
    samples = {"COLOR": "blue", "IMAGE": "repo:tag", "[DIR]": "somewhere", "DIR": "somewhere", "VERSION": "v1"}
    parse([samples.get(a, a) for a in shlex.split(line)[1:]])


def test_a_bad_command_line_does_not_parse() -> None:
    """The checker itself can fail: a wrong option or command is caught."""
    with pytest.raises(Exception, match="No such option"):
        parse(["up", "--no-such-option"])
    with pytest.raises(Exception, match="No such command"):
        parse(["no-such-command"])


def test_the_settings_reference_is_generated_from_the_code() -> None:
    """docs/settings.md is what the settings model and the default file say now (regenerate it if not)."""
    from bluegreen.orchestrator.settings.model import Settings
    from bluegreen.orchestrator.settings.reference import reference

    text = reference()
    assert (REPO / "docs" / "settings.md").read_text() == text, (
        "docs/settings.md is stale: python3 -m bluegreen.orchestrator.settings.reference > docs/settings.md")
    for section, field in Settings.model_fields.items():
        if not field.exclude:
            assert f"`{section}" in text, section
    assert "| `serve.token` | secret | `\"\"` |" in text  # a secret's value is never shown


def test_each_command_is_registered_by_the_module_the_fast_path_imports_for_it() -> None:
    """`bluegreen rollback` loads only the module COMMAND_MODULES names for it: the table is the truth."""
    registered = {}
    for info in app.registered_commands:
        assert info.callback is not None
        registered[info.name or typer.main.get_command_name(info.callback.__name__)] = info.callback.__module__
    for group in app.registered_groups:
        assert group.typer_instance is not None
        [module] = {c.callback.__module__ for c in group.typer_instance.registered_commands if c.callback}
        registered[str(group.name)] = module
    table = {name: f"bluegreen.orchestrator.cli.{module}" for module, names in COMMAND_MODULES.items()
             for name in names}
    assert registered == table
    assert list(ROOT.commands) == [name for names in COMMAND_MODULES.values() for name in names
                                   if name not in ("images", "backup", "fleet")] + ["images", "backup", "fleet"]
