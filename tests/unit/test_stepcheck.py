"""Counters read from several replicas across a restart: monotonic, summed, never backwards."""

from __future__ import annotations

from bluegreen.orchestrator.analysis.stepcheck import _ReplicaCounters


def test_a_replica_that_restarts_or_stops_answering_keeps_the_sum_monotonic() -> None:
    counters = _ReplicaCounters()
    counters.update("r1", "latency", {0.01: 10.0, float("inf"): 12.0})
    counters.update("r2", "latency", {0.01: 5.0, float("inf"): 5.0})
    assert counters.total("latency") == {0.01: 15.0, float("inf"): 17.0}
    counters.update("r1", "latency", {0.01: 2.0, float("inf"): 3.0})  # r1 restarted: its counters began again
    assert counters.total("latency") == {0.01: 17.0, float("inf"): 20.0}
    counters.update("r1", "latency", {0.01: 4.0, float("inf"): 5.0})
    # r2 does not answer this time: it counts with what it last said
    assert counters.total("latency") == {0.01: 19.0, float("inf"): 22.0}
    counters.update("r2", "predictions", {"setosa": 3.0})
    assert counters.total("predictions") == {"setosa": 3.0}  # kinds are kept apart
