"""``bluegreen compare A B``: two versions side by side, without touching blue or green.

Each image runs in a scratch container on free loopback ports (its own for every named port the
contract's command or environment uses), is waited on until ready, and is judged on the holdout
and on replayed recorded requests, as a release's gate would judge them. The containers are
removed however it ends.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bluegreen.orchestrator.analysis import gate, replay
from bluegreen.orchestrator.common.ports import free_ports
from bluegreen.orchestrator.deployment import Deployment, Slot
from bluegreen.orchestrator.errors import InvalidRequest
from bluegreen.orchestrator.model import quality
from bluegreen.orchestrator.model.client import ModelClient
from bluegreen.orchestrator.model.health import wait_healthy
from bluegreen.orchestrator.model.versions import version_of

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


@dataclass
class Comparison:
    a: str
    b: str
    task: str
    holdout: str
    rows: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {a, b}
    better: dict[str, str] = field(default_factory=dict)  # metric -> "a" | "b" | "same"
    replay: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(dep: Deployment, image_a: str, image_b: str, progress: Progress = _quiet) -> Comparison:
    s = dep.settings
    if image_a == image_b:
        raise InvalidRequest(f"compare needs two different images, got {image_a} twice", "bluegreen compare A B")
    holdout = dep.holdout
    if holdout is None:
        raise InvalidRequest(f"the {dep.contract.profile} profile has no bundled holdout to compare on",
                             "set analysis.holdout   (runbooks/model-contract.md)")
    began = time.monotonic()
    tag = secrets.token_hex(3)
    names = sorted(s.environments.blue.ports)
    started: list[str] = []
    try:
        urls = []
        for label, image in (("a", image_a), ("b", image_b)):
            port, *extra = free_ports(1 + len(names), s.environments.host)
            slot = Slot(f"compare-{tag}-{label}", port, dict(zip(names, extra, strict=True)))
            progress(f"starting {image} in a scratch container on port {port}")
            dep.runtime.require_image(image)
            dep.runtime.start(slot.name, image, version_of(image, None), port,
                              dep.container_env(None, image, slot=slot), dep.mounts(),
                              command=dep.container_command(None, slot=slot))
            started.append(slot.name)
            url = f"http://{s.environments.host}:{port}"
            _wait(dep, slot.name, url)
            urls.append(url)
        with ModelClient(urls[0], dep.contract) as a, ModelClient(urls[1], dep.contract) as b:
            result = Comparison(image_a, image_b, dep.task.task, holdout.source, len(holdout.y))
            scores = {"a": gate.score(a, holdout, dep.task.task), "b": gate.score(b, holdout, dep.task.task)}
            for name in quality.METRICS[dep.task.task]:
                if name in scores["a"] and name in scores["b"]:
                    va, vb = scores["a"][name], scores["b"][name]
                    result.metrics[name] = {"a": va, "b": vb}
                    worse_b = quality.degradation(name, vb, va)
                    result.better[name] = "same" if abs(worse_b) < 1e-9 else ("a" if worse_b > 0 else "b")
            r = s.analysis.replay
            rows = replay.recorded_rows(s.database.url, s.sqlite_path, r.requests, len(holdout.columns))
            report = replay.replay(a, b, rows, holdout.columns, dep.task.task, r.max_difference,
                                   "application database", r.budget)
            result.replay = report.to_dict()
    finally:
        for name in started:
            dep.runtime.remove(name)
    result.seconds = round(time.monotonic() - began, 3)
    return result


def _wait(dep: Deployment, name: str, url: str) -> None:
    c = dep.contract

    def problem() -> str | None:
        info = dep.runtime.inspect(name)
        if info is None:
            return "container disappeared"
        return None if info.running else f"container exited with code {info.exit_code}"

    wait_healthy(name, url, dep.settings.environments.health_timeout, problem,
                 logs=lambda: dep.runtime.log_tail(name), path=c.path(c.ready_path), expect=c.ready_status)
