"""Metric sources that decide a step, besides the proxy's own counters (analysis.py): one module each."""
