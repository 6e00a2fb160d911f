"""The HTTP face of bluegreen (``bluegreen serve``): it parses, calls one core function, and renders.

Nothing is decided here that the CLI decides elsewhere: both call the same core. See app.py.
"""
