"""Settings: the typed model (model.py), the stdlib core and the validated cache that keep commands
fast (core.py, cache.py), the reference and the default file. Imports the model vocabulary and common."""
