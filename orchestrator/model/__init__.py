"""What a model server is and how it is judged: the contract, the client that speaks it, readiness
probes, task metrics and versions. Imports common and errors only."""
