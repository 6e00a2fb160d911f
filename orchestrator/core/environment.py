"""One colour's server: started with a version and proved ready, and the colour the proxy fails over to.

The lowest rung of the state machine: release, rollback, recovery, drills and ``up`` all start a
colour through ``ensure_environment``, which leaves nothing half-started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from bluegreen.environments.runtime import ContainerInfo, env_digest
from bluegreen.orchestrator.common.ports import require_free
from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import EnvironmentFailed
from bluegreen.orchestrator.model.health import wait_healthy
from bluegreen.orchestrator.settings.core import COLORS

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def ensure_environment(dep: Deployment, color: str, image: str, version: str,
                       progress: Progress = _quiet, extra_env: dict[str, str] | None = None,
                       reuse: Literal["same-settings", "same-image", "never"] = "same-settings"
                       ) -> ContainerInfo | None:
    """Start ``color`` with ``image`` and wait until healthy; None when a running one is kept.

    A healthy running container is kept when it runs the same image and, with "same-settings",
    the same environment; "never" (a release's candidate) always starts a new one. Anything
    else of ours there is replaced. On failure the new container is removed, so nothing is
    left half-started.
    """
    runtime = dep.runtime
    env = dep.container_env(color, image, extra_env)
    current = runtime.inspect(color)
    if (reuse != "never" and current is not None and current.running and current.image == image
            and (reuse == "same-image" or current.env_digest == env_digest(env))
            and dep.probe(color).healthy):
        if current.env_digest != env_digest(env):
            progress(f"{color} keeps running with its earlier settings; a release applies new ones")
        return None
    runtime.require_image(image)
    if current is not None:
        progress(f"replacing {color}'s container ({current.image}, {current.state})")
        runtime.remove(color)
    port = dep.settings.environments.color(color).port
    step = dep.settings.runtime.port_step
    for i in range(dep.settings.runtime.replicas):
        require_free(dep.settings.environments.host, port + i * step,
                     f"environments.{color}.port" + (f" + {i} * runtime.port_step (replica {i + 1})" if i else ""))
    data_dir = dep.data_dir()
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    progress(f"starting {color}: {image}")
    info = runtime.start(color, image, version, port, env, dep.mounts(), command=dep.container_command(color),
                         options=dep.container_options())

    def problem() -> str | None:
        now = runtime.inspect(color)
        if now is None:
            return "container disappeared"
        if not now.running:
            return f"container exited with code {now.exit_code}"
        return None

    try:
        c = dep.contract
        began = time.monotonic()
        for i, url in enumerate(dep.replica_urls(color)):  # every replica answers before traffic may come
            wait_healthy(color if i == 0 else f"{color} replica {i + 1}", url,
                         dep.settings.environments.health_timeout, problem, logs=lambda: runtime.log_tail(color),
                         path=c.path(c.ready_path), expect=c.ready_status)
        seconds = time.monotonic() - began
    except BaseException:
        runtime.remove(color)
        raise
    progress(f"{color} healthy in {seconds:.2f}s")
    return runtime.inspect(color) or info


def warm_standby(dep: Deployment, live: str) -> str | None:
    """The colour the proxy should fail over to: the warm previous colour, if it really runs healthy."""
    warm = dep.state.get_doc("warm")
    if warm is None or warm.get("color") == live:
        return None
    color = str(warm["color"])
    record = dep.state.environment(color)
    info = dep.runtime.inspect(color)
    healthy = bool(record and info and info.running and info.image == record.image and dep.probe(color).healthy)
    return color if healthy else None


def publish_scrape_targets(dep: Deployment) -> None:
    """Keep analysis.prometheus.targets_file (file_sd) naming both colours' metrics, labelled by colour."""
    from urllib.parse import urlsplit

    from bluegreen.orchestrator.analysis.sources.prometheus import write_targets

    name = dep.settings.analysis.prometheus.targets_file
    if not name:
        return
    targets = {}
    for color in COLORS:
        url = dep.metrics_url(color)
        if url is not None:
            parts = urlsplit(url)
            targets[color] = (parts.netloc, parts.path)
    path = dep.settings.root / name
    try:
        write_targets(path, dep.settings.project, targets)
    except OSError as exc:
        raise EnvironmentFailed(f"cannot write the Prometheus target file {path}: {exc.strerror}",
                                "check analysis.prometheus.targets_file") from None
