"""bluegreen: blue/green releases of ML model servers."""
__version__ = "0.1.0"
