"""Tests that need no Docker engine, proxy or database server: `python3 -m pytest tests/unit` (seconds)."""
