"""bluegreen: blue/green releases of ML model servers on Docker.

The distribution installs this one import namespace. Its subpackages live at the top of the
repository, where the product's layout names them, and are linked in here:

    bluegreen.orchestrator   the faces, the release state machine, analysis, the deployment's adapters
    bluegreen.environments   the container runtimes and the reference model server image
    bluegreen.backups        database and config snapshots, continuous archives
"""

__version__ = "0.1.0"
