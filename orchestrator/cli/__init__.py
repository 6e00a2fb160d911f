"""The ``bluegreen`` command (a face): parse, call one core function, render its result.

``app.py`` holds the Typer app, the global options, the rendering of errors, and ``register``, which
loads the modules beside it — one per group of commands — only as a run needs them. Imports the
core, automation and the API; nothing imports it.
"""

from bluegreen.orchestrator.cli.app import main, register

__all__ = ["main", "register"]
