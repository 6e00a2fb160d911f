"""Small helpers every layer may use: free ports, private files, plain HTTP, redaction, fault
points, optional extras. Imports nothing of bluegreen but the errors module."""
