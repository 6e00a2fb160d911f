"""The ``bluegreen`` command (a face): parse, call one core function, render its result.

``app.py`` holds the Typer app, the global options and the rendering of errors; each module
beside it holds one group of commands. Importing this package registers every command, in the
order ``bluegreen --help`` lists them. Imports the core, automation and the API; nothing imports it.
"""
# isort: skip_file
# (the import order below is the order the commands are registered and listed in)

from bluegreen.orchestrator.cli import lifecycle, releases, models, automation, images, backups, completion  # noqa: F401
from bluegreen.orchestrator.cli.app import app, main

__all__ = ["app", "main"]
