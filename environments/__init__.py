"""Docker runtime for the blue and green environments, and the reference model image."""
