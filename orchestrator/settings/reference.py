"""The settings reference (docs/settings.md), generated from the settings model and the commented
default file, so that it cannot drift from the code (tests/unit/test_docs.py compares them).

    python3 -m bluegreen.orchestrator.settings.reference > docs/settings.md
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

from pydantic import BaseModel, SecretStr

from bluegreen.orchestrator.settings.core import ENV_PREFIX, default_toml

HEADER = """# Settings reference

Generated from the settings model (`orchestrator/settings/model.py`) and the comments of the default
file (`orchestrator/settings/default.toml`) by `python3 -m bluegreen.orchestrator.settings.reference`; a test
fails when it differs from the code. Every setting can be given in `bluegreen.toml` or as an
environment variable (`BLUEGREEN_<SECTION>__<KEY>`, which wins); durations take `"250ms"`, `"30s"`,
`"5m"`, `"1h"` or seconds; sizes take `"64KiB"`, `"1MiB"`, `"1MB"` or bytes. `bluegreen init` writes
the default file with these comments.
"""


def _comments() -> dict[str, str]:
    """``section.key`` -> the comment lines above the key in the default file (and sections' own).

    Keys written one after another share the comment above the first (``host`` and ``port``), and
    keys shown commented out (``# ready_path = "/health"``, the [model] profile's overridable keys)
    count as keys with that comment.
    """
    out: dict[str, str] = {}
    section = ""
    pending: list[str] = []
    group = ""  # the description of the keys being listed together
    key_line = re.compile(r"^([a-z0-9_]+)\s*=")
    for raw in default_toml().splitlines():
        line = raw.strip()
        if not line:
            pending, group = [], ""
            continue
        commented = line.lstrip("#").strip() if line.startswith("#") else None
        key = key_line.match(commented if commented is not None else line)
        if commented is not None and key is None:
            if group and not pending:
                group = ""  # a new description begins
            pending.append(commented)
            continue
        header = re.match(r"^\[([a-z0-9_.]+)\]$", line)
        if header:
            section = header.group(1)
            if pending:
                out[section] = " ".join(pending)
            pending, group = [], ""
            continue
        if key:
            if pending:
                group = " ".join(pending)
            if group:
                out[f"{section}.{key.group(1)}" if section else key.group(1)] = group
        pending = []
    return out


# Keys the default file cannot show with a comment of their own.
NOTES = {
    "serve.token": "The API token. Only from BLUEGREEN_SERVE__TOKEN (or the file serve.token_file names): "
                   "refused in bluegreen.toml, never printed or logged.",
    "environments.blue": "Blue's port, and extra named ports its server opens (ports = {NAME = port}).",
    "environments.green": "Green's port, and extra named ports its server opens (ports = {NAME = port}).",
    "analysis.prometheus.queries": "PromQL checks per step, by name: { query = '…', max = … or min = … }, "
                                   "with {colour} and {window} filled in (runbooks/model-contract.md).",
    "release.checks": "The team's own checks, each a [[release.checks]] table of a kind: web, job or approval "
                      "(the tables below; runbooks/strategies.md).",
}


def _tagged_variants(annotation: Any) -> list[type[BaseModel]]:
    """The table types of a list of tables told apart by a key (list[web | job | approval]); else none."""
    if typing.get_origin(annotation) is not list:
        return []
    (item,) = typing.get_args(annotation)
    if typing.get_origin(item) is typing.Annotated:
        item = typing.get_args(item)[0]
    variants = typing.get_args(item) if typing.get_origin(item) in (typing.Union, types.UnionType) else ()
    return [v for v in variants if isinstance(v, type) and issubclass(v, BaseModel)]


def _tag(model: type[BaseModel]) -> str:
    (value,) = typing.get_args(model.model_fields["kind"].annotation)
    return str(value)


def _table_rows(model: type[BaseModel], key: str, out: list[str]) -> None:
    """One kind of table in a list: its keys, described by the model (a list has no variable per key)."""
    out += ["", f"## [[{key}]] kind = \"{_tag(model)}\"", "", " ".join((model.__doc__ or "").split()),
            "", "| key | type | default | what it does |", "| --- | --- | --- | --- |"]
    instance = model.model_construct()
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        default = "required" if field.is_required() else _default(field, getattr(instance, name, None))
        note = (field.description or "").replace("|", "\\|")
        out.append(f"| `{name}` | {_type(field.annotation)} | `{default}` | {note} |")


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type):
        if issubclass(annotation, SecretStr):
            return "secret"
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(field: Any, value: Any) -> str:
    if isinstance(value, SecretStr):
        return '""'
    if isinstance(value, BaseModel):
        return "(table)"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).replace("PosixPath(", "").replace("'", '"')


def _rows(model: type[BaseModel], prefix: str, notes: dict[str, str], out: list[str]) -> None:
    instance = model.model_construct()
    nested: list[tuple[str, type[BaseModel]]] = []
    tables: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        shown = field.alias or name  # `with` is a Python keyword: the field is with_, the key `with`
        key = f"{prefix}.{shown}" if prefix else shown
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name not in ("blue", "green"):
            nested.append((key, annotation))
            continue
        tables += [(key, variant) for variant in _tagged_variants(annotation)]
        try:
            value = getattr(instance, name)
        except AttributeError:
            value = None
        if field.is_required():
            default = "required"
        elif value is None and prefix == "model":
            default = "from model.profile"
        elif isinstance(value, BaseModel):
            default = ", ".join(f"{k} = {_default(None, v)}" for k, v in value.model_dump().items())
        else:
            default = _default(field, value)
        env = f"{ENV_PREFIX}{key.upper().replace('.', '__')}"
        note = (notes.get(key) or NOTES.get(key, "")).replace("|", "\\|")
        out.append(f"| `{key}` | {_type(annotation)} | `{default}` | `{env}` | {note} |")
    for key, variant in tables:
        _table_rows(variant, key, out)
    for key, sub in nested:
        out.append("")
        out.append(f"## [{key}]")
        if notes.get(key):
            out.append("")
            out.append(notes[key])
        out.append("")
        out.append("| key | type | default | variable | what it does |")
        out.append("| --- | --- | --- | --- | --- |")
        _rows(sub, key, notes, out)


def reference() -> str:
    from bluegreen.orchestrator.settings.model import Settings

    out = [HEADER, "## Top level", "", "| key | type | default | variable | what it does |",
           "| --- | --- | --- | --- | --- |"]
    _rows(Settings, "", _comments(), out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
