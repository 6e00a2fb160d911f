"""bluegreen: blue/green releases of ML model servers on Docker.

The distribution installs this one import namespace. Its subpackages live at the top of the
repository, where the product's layout names them, and are linked in here:

    bluegreen.orchestrator   the CLI, settings, release state machine, proxy drivers, analysis
    bluegreen.environments   the container runtime and the reference model server image
    bluegreen.backups        database and config snapshots
"""

__version__ = "0.1.0"
