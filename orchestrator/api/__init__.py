"""The HTTP face (``bluegreen serve``): the API, the dashboard, metrics, and the process that runs them
with the scheduler (server.py). It parses, calls one core function, and renders; nothing is decided
here that the CLI decides elsewhere. Imports automation, the core and below; never the CLI.
"""
