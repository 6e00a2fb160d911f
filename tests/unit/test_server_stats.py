"""One colour as the proxy's several processes count it (ServerStats.summed)."""

from __future__ import annotations

from bluegreen.orchestrator.analysis.steps import lost_replicas, snapshot
from bluegreen.orchestrator.proxy.base import ServerStats


def stats(status: str = "UP", sessions: int = 0, answered: int = 0, errors: int = 0, downs: int = 0,
          replicas: tuple[ServerStats, ...] = ()) -> ServerStats:
    return ServerStats(status=status, weight=50, current_sessions=sessions, total_sessions=answered + errors,
                       responses_total=answered, responses_2xx=answered, responses_5xx=0, errors=errors,
                       avg_response_ms=3, retries=0, down_transitions=downs, replicas=replicas)


def test_counters_add_up_and_what_is_open_now_comes_from_the_processes_that_answer() -> None:
    one = stats(sessions=2, answered=10, errors=1)
    other = stats(sessions=3, answered=20)
    restarted_earlier = stats(sessions=7, answered=5, errors=2)  # carried: its open sessions are gone
    total = ServerStats.summed([one, other], [restarted_earlier])
    assert (total.responses_total, total.errors, total.total_sessions) == (35, 3, 38)
    assert (total.current_sessions, total.weight, total.status) == (5, 50, "UP")
    assert ServerStats.summed([one]) is one


def test_a_colour_is_up_only_if_every_process_that_answers_says_so() -> None:
    assert ServerStats.summed([stats("UP"), stats("DOWN")]).status == "DOWN"
    assert ServerStats.summed([stats("MAINT"), stats("UP")]).status == "MAINT"
    assert ServerStats.summed([stats("UP"), stats("UP")], [stats("DOWN")]).status == "UP"  # carried: no say


def test_one_replica_death_seen_by_two_processes_is_one_death_not_a_replica_that_keeps_failing() -> None:
    """Each process takes a dead replica out on its own: counting both as two would fail a step for a
    replica that died once (analysis.lost_replicas forgives one death, not two)."""
    before = [stats(replicas=(stats(), stats())) for _ in range(2)]
    after = [stats(errors=1, replicas=(stats(errors=1, downs=1), stats())) for _ in range(2)]
    combined_before, combined_after = ServerStats.summed(before), ServerStats.summed(after)
    assert combined_after.replicas[0].down_transitions == 1
    assert combined_after.replicas[0].errors == 2
    loss = lost_replicas(snapshot(combined_before, ""), snapshot(combined_after, ""))
    assert (loss.taken_out, loss.forgiven, loss.reasons) == (1, 2, ())
