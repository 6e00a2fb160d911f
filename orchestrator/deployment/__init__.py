"""The deployment: its settings turned into the adapters the core works with (bundle.py), and the
containers of its workers (workers.py). Imports settings, adapters, the model; never the core."""

from bluegreen.orchestrator.deployment.bundle import CONTAINER_DATA_DIR, Deployment, Slot, other

__all__ = ["CONTAINER_DATA_DIR", "Deployment", "Slot", "other"]
