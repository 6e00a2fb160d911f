"""Where the colours run: the runtime interface and its Docker (runtime.py) and Swarm (swarm.py)
implementations, the engine's plain API, image builds, compose files, and the reference model server
image (model_server/). An adapter layer: imports the orchestrator's common helpers and errors only."""
