"""Reverse-proxy drivers behind one interface (see base.Proxy)."""

from bluegreen.orchestrator.proxy.base import Backend, Proxy, ServerStats

__all__ = ["Backend", "Proxy", "ServerStats"]
