"""Metric sources a step can be judged by, one module per outside system (prometheus.py). Adapters:
they import common and errors only."""
