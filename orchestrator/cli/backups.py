"""The ``bluegreen backup`` group: create, list, verify, restore, prune."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bluegreen.orchestrator.cli.app import OPTIONS, JsonOpt, app, current_deployment, emit, show_progress
from bluegreen.orchestrator.cli.completers import backup_sets

backup_app = typer.Typer(help="Snapshots of the database and config files: create, list, verify, restore, prune.",
                         no_args_is_help=True)
app.add_typer(backup_app, name="backup")


@backup_app.command("create")
def backup_create(
    reason: Annotated[str, typer.Option("--reason", help="Why, kept in the manifest.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Snapshot the database and the config files into a new backup set."""
    from bluegreen.orchestrator.core import snapshots

    OPTIONS.json = as_json
    backup = snapshots.create(current_deployment(), reason, progress=show_progress)
    if as_json:
        emit(backup.to_dict())
        return
    db = backup.manifest["database"]
    what = ("no application database" if db["engine"] == "none" else
            f"{db['engine']} {sum(db['row_counts'].values())} rows in {len(db['row_counts'])} tables")
    typer.echo(f"backup set {backup.id}: {what}, {len(backup.manifest['files'])} files")


@backup_app.command("list")
def backup_list(as_json: JsonOpt = False) -> None:
    """List the backup sets, newest first."""
    OPTIONS.json = as_json
    sets = current_deployment().backups.all_sets()
    if as_json:
        emit([s.to_dict() for s in sets])
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
    set_id: Annotated[str, typer.Argument(metavar="ID", help="A set from bluegreen backup list.",
                                              autocompletion=backup_sets)],
    as_json: JsonOpt = False,
) -> None:
    """Re-hash a set's files and restore its database into a scratch copy to check it."""
    from bluegreen.orchestrator.core import snapshots

    OPTIONS.json = as_json
    report = snapshots.verify(current_deployment(), set_id, progress=show_progress)
    if as_json:
        emit(report.to_dict())
    elif report.ok:
        typer.echo(f"{set_id}: verified (hashes, integrity and row counts match the manifest)")
    if not report.ok:
        from bluegreen.orchestrator.errors import BackupError

        raise BackupError(f"backup set {set_id} failed verification: " + "; ".join(report.problems),
                          "bluegreen backup list   (use another set)")


@backup_app.command("restore")
def backup_restore(
    set_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="A set from bluegreen backup list.",
                                                 autocompletion=backup_sets, show_default=False)] = None,
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
    from bluegreen.orchestrator.core import snapshots

    OPTIONS.json = as_json
    if at is not None or before_release is not None:
        if set_id is not None or (at is not None and before_release is not None):
            raise typer.BadParameter("give one of ID, --at or --before-release", param_hint="ID")
        dep = current_deployment()
        if into is None:
            if not yes and not sys.stdin.isatty():
                raise typer.BadParameter("restoring a moment in place replaces the live database; pass --yes to "
                                         "confirm, or --into NEW to look at it first", param_hint="--yes")
            if not yes:
                typer.confirm(f"Replace the live database with its state as of "
                              f"{at or f'release {before_release}'}? (a safety snapshot is taken first)", abort=True)
        elif dep.settings.sqlite_path is not None:
            into = str(Path(into).resolve())
        report = snapshots.restore_to_point(dep, into, at=at, release_id=before_release, progress=show_progress)
        if as_json:
            emit(report)
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
    dep = current_deployment()
    if not yes:
        typer.confirm(f"Replace the live database with backup {set_id}? (a safety snapshot is taken first)",
                      abort=True)
    restored, safety = snapshots.restore(dep, set_id, progress=show_progress)
    if as_json:
        emit({"restored": restored.id, "safety": safety.id})
        return
    typer.echo(f"restored {restored.id}; the state before the restore is in safety set {safety.id}")


@backup_app.command("prune")
def backup_prune(
    keep: Annotated[int | None, typer.Option("--keep", help="How many sets to keep (default: backups.keep).",
                    show_default=False, min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old backup sets, keeping the newest N and always the newest verified one."""
    from bluegreen.orchestrator.core import snapshots

    OPTIONS.json = as_json
    removed = snapshots.prune(current_deployment(), keep)
    if as_json:
        emit({"removed": removed})
        return
    typer.echo(f"removed {len(removed)} sets" + (": " + ", ".join(removed) if removed else ""))
