"""Reverse-proxy drivers behind one interface (base.Proxy): HAProxy through its runtime API, nginx
through its config and reloads, and the supervisor that runs either in a container. An adapter: imports
environments (the supervisor's engine), common and errors."""

from bluegreen.orchestrator.proxy.base import Backend, Proxy, ServerStats

__all__ = ["Backend", "Proxy", "ServerStats"]
