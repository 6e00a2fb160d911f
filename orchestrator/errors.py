"""Every error bluegreen reports to an operator.

Each one carries a message (what went wrong) and a hint (the next command or runbook).
The CLI shows them once, at the edge, as ``Error: …`` / ``Try: …`` on stderr and exits
with the error's ``exit_code``. Adapters catch vendor exceptions (``docker.errors.*``,
``httpx.HTTPError``, ``sqlite3.Error``, ``OSError``) and re-raise one of these.

    BluegreenError                 exit 1
    ├── InvalidRequest             exit 2   a request that cannot be carried out as asked
    ├── ConfigError                exit 4   bad settings file, key or value
    ├── LockHeld                   exit 3   another operation holds the deployment lock
    ├── StateError                 exit 1   the state database cannot be read or written
    ├── DockerUnavailable          exit 5   the Docker engine does not answer
    ├── ImageNotFound              exit 6   the image is not on the engine
    ├── PortInUse                  exit 7   a loopback port we need is taken
    ├── EnvironmentFailed          exit 8   a container crashed or never became healthy
    ├── ProxyError                 exit 9   the reverse proxy failed to start, answer or change
    ├── ImageBuildError            exit 10  building a reference image failed
    ├── ReleaseFailed              exit 11  a release failed a check; traffic went back to the old colour
    ├── ReleaseAborted             exit 12  a release was aborted (operator, Ctrl-C); traffic went back
    ├── BackupError                exit 13  a snapshot, verify or restore failed (nothing was changed)
    ├── ContractError              exit 14  a model server does not answer as [model] says it does
    ├── DrillFailed                exit 15  a rollback drill failed (RTO, restore or failed requests)
    └── MissingDependency          exit 16  an optional part is not installed (the hint names its extra)

Exit code 2 is shared with the CLI parser (bad arguments), as Click does; 130 is Ctrl-C.
"""

from __future__ import annotations

RUNBOOKS = "runbooks"


class BluegreenError(Exception):
    """Base class: a message for the operator and a hint naming what to do next."""

    exit_code = 1
    default_hint = "bluegreen status   (runbooks/README.md)"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class InvalidRequest(BluegreenError):
    exit_code = 2
    default_hint = "bluegreen release --help   (runbooks/release.md)"


class ConfigError(BluegreenError):
    exit_code = 4
    default_hint = "bluegreen init --force   (runbooks/settings.md)"


class LockHeld(BluegreenError):
    exit_code = 3
    default_hint = "wait for it to finish, then retry; bluegreen status shows it   (runbooks/locks.md)"


class StateError(BluegreenError):
    exit_code = 1
    default_hint = "check the state directory's permissions and free space   (runbooks/state.md)"


class DockerUnavailable(BluegreenError):
    exit_code = 5
    default_hint = "start the engine (scripts/provision.sh does) or set docker.host   (runbooks/docker.md)"


class ImageNotFound(BluegreenError):
    exit_code = 6
    default_hint = "bluegreen images build   (runbooks/images.md)"


class PortInUse(BluegreenError):
    exit_code = 7
    default_hint = "ss -ltnp   then stop that process or choose another port in bluegreen.toml"


class EnvironmentFailed(BluegreenError):
    exit_code = 8
    default_hint = "bluegreen logs <color>   (runbooks/failed-start.md)"


class ProxyError(BluegreenError):
    exit_code = 9
    default_hint = "bluegreen status; the proxy log is in the state directory   (runbooks/proxy.md)"


class ImageBuildError(BluegreenError):
    exit_code = 10
    default_hint = "bluegreen images build --verbose   (runbooks/images.md)"


class ReleaseFailed(BluegreenError):
    exit_code = 11
    default_hint = "bluegreen history --limit 3   (runbooks/failed-release.md)"


class ReleaseAborted(BluegreenError):
    exit_code = 12
    default_hint = "bluegreen status; bluegreen history   (runbooks/release.md)"


class BackupError(BluegreenError):
    exit_code = 13
    default_hint = "bluegreen backup list; df -h   (runbooks/restore.md)"


class ContractError(BluegreenError):
    exit_code = 14
    default_hint = "bluegreen doctor   (which part of [model] the server does not match; runbooks/model-contract.md)"


class DrillFailed(BluegreenError):
    exit_code = 15
    default_hint = "bluegreen history --limit 3   (runbooks/drills.md)"


class MissingDependency(BluegreenError):
    exit_code = 16
    default_hint = "pip install 'bluegreen[compose,pitr]'   (runbooks/install.md)"
