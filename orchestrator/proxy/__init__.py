"""Reverse-proxy drivers behind one interface (see base.Proxy)."""

from orchestrator.proxy.base import Backend, Proxy, ServerStats

__all__ = ["Backend", "Proxy", "ServerStats"]
