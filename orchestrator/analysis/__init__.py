"""Evidence and verdicts: the health and quality gate, each step's analysis from the proxy and
Prometheus, drift, replay, compare and doctor. Imports the deployment, the model and adapters; never the core."""
