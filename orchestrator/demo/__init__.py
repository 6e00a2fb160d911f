"""``bluegreen demo``: the whole story in a scratch deployment (story.py), or a fleet of three
deployments behind one proxy (fleet.py), every figure measured in the run. A face of its own: it
drives the product as a user would, and imports the core and below; nothing imports it but the CLI."""

from bluegreen.orchestrator.demo.story import Demo, Jobs, Summary, Traffic, Watcher, demo

__all__ = ["Demo", "Jobs", "Summary", "Traffic", "Watcher", "demo"]
