"""Snapshots of the application database and the config files: create, verify, restore, prune."""
