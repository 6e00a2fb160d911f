"""Moving traffic: weights go to a colour only once the proxy itself takes it as up.

bluegreen's own probes prove a colour healthy from where bluegreen runs; the proxy decides from
its own health checks, run on their own schedule. A colour started a moment ago (a cold
rollback, ``rollback --to`` a killed colour, a drill's canary, a recovery) answers the probes
while the proxy still holds it down from when it was stopped. Weights moved to it then, with
the colour that was serving at weight 0 and no standby, leave the proxy no server: users get
503 until its next check passes (measured: 13 to 268 failed requests per cold rollback under
wrk's 8 connections). Every path that moves traffic goes through ``move_traffic``.
"""

from __future__ import annotations

from collections.abc import Callable

from bluegreen.orchestrator.deployment import Deployment
from bluegreen.orchestrator.errors import ProxyError

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def gaining(dep: Deployment, weights: dict[str, int]) -> list[str]:
    """The colours ``weights`` gives more traffic than they have now."""
    now = dep.proxy.weights()
    return [color for color, weight in weights.items() if weight > now.get(color, 0)]


def proxy_sees_up(dep: Deployment, color: str, timeout: float, progress: Progress = _quiet) -> bool:
    """Whether the proxy takes every server of ``color`` as up within ``timeout`` seconds."""
    if dep.proxy.wait_servers_up(color, 0):
        return True
    progress(f"waiting for {dep.proxy.name} to take {color} as up (its own health check)")
    return dep.proxy.wait_servers_up(color, timeout)


def move_traffic(dep: Deployment, weights: dict[str, int], progress: Progress = _quiet,
                 timeout: float | None = None) -> None:
    """Set ``weights`` once the proxy takes every colour they give more traffic as up.

    Raises ProxyError, leaving the weights as they were, when a colour is not up to the proxy
    within ``timeout`` seconds (default: environments.health_timeout, the time a started colour
    has to become healthy).
    """
    wait = dep.settings.environments.health_timeout if timeout is None else timeout
    for color in gaining(dep, weights):
        if not proxy_sees_up(dep, color, wait, progress):
            stats = dep.proxy.stats().get(color)
            seen = f" (it reports {stats.status})" if stats is not None and stats.status else ""
            raise ProxyError(f"{dep.proxy.name} does not take {color} as up{seen} within {wait:g}s, though {color} "
                             "answers bluegreen's probes: traffic stays where it was",
                             f"bluegreen status; can the proxy reach {dep.url(color)}? (proxy.check_interval_ms, "
                             "the contract's ready path; runbooks/proxy.md)")
    dep.proxy.set_weights(weights)
