"""Backups: sets of the database and config files (sets.py) through SQLite's online backup API and
pg_dump, and continuous archives for point-in-time recovery (litestream.py, pgbackrest.py). An adapter
layer: imports the orchestrator's common helpers and errors only."""
