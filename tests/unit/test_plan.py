"""The release planner, table-driven: what it plans, and every request it refuses."""

from __future__ import annotations

import pytest

from bluegreen.orchestrator.analysis.steps import Snapshot, conclusive_failure, judge, quantile
from bluegreen.orchestrator.core.plan import Observed, ReleaseRequest, plan_release
from bluegreen.orchestrator.errors import InvalidRequest

LIVE_BLUE = Observed(live_color="blue", live_image="m:v1", live_version="v1", live_env={"K": "secret"},
                     live_running=True)


def test_a_release_goes_to_the_idle_colour_in_the_planned_steps() -> None:
    plan = plan_release(LIVE_BLUE, ReleaseRequest("m:v2", steps=[10, 25, 50, 100], bake=30))
    assert (plan.from_color, plan.to_color, plan.version, plan.from_version) == ("blue", "green", "v2", "v1")
    assert [s.name for s in plan.steps] == ["backup", "start", "gate", "shift-10", "shift-25", "shift-50",
                                            "shift-100", "promote"]
    assert [s.weight for s in plan.steps if s.action == "shift"] == [10, 25, 50, 100]
    assert {s.bake for s in plan.steps if s.action == "shift"} == {30}


def test_a_release_with_migrations_applies_them_after_the_snapshot_and_before_the_candidate() -> None:
    plan = plan_release(LIVE_BLUE, ReleaseRequest("m:v2", steps=[100], migrations="/srv/migrations"))
    assert [s.name for s in plan.steps] == ["backup", "migrate", "start", "gate", "shift-100", "promote"]
    assert plan.to_dict()["migrations"] == "/srv/migrations"


def test_from_green_the_release_goes_to_blue() -> None:
    observed = Observed(live_color="green", live_image="m:v2", live_version="v2")
    assert plan_release(observed, ReleaseRequest("m:v3")).to_color == "blue"


def test_the_version_defaults_to_the_tag_and_can_be_given() -> None:
    assert plan_release(LIVE_BLUE, ReleaseRequest("registry:5000/team/m:2.1")).version == "2.1"
    assert plan_release(LIVE_BLUE, ReleaseRequest("m:latest", version="v7")).version == "v7"


def test_the_plan_shows_environment_names_but_never_values() -> None:
    plan = plan_release(LIVE_BLUE, ReleaseRequest("m:v2", env={"API_TOKEN": "hunter2"}))
    shown = plan.to_dict()
    assert shown["env"] == ["API_TOKEN"] and shown["from_env"] == ["K"]
    assert "hunter2" not in str(shown) and "secret" not in str(shown) and "hunter2" not in str(plan.describe())


@pytest.mark.parametrize(
    ("observed", "request_", "message"),
    [
        (LIVE_BLUE, ReleaseRequest("m:v1", env={"K": "secret"}), "version v1 is already live in blue with these "
         "settings"),
        (LIVE_BLUE, ReleaseRequest("m:other", version="v1"), "version v1 is already live in blue"),
        (LIVE_BLUE, ReleaseRequest("m"), "m has no tag to take the version from"),
        (LIVE_BLUE, ReleaseRequest("m:v2", steps=[10, 50, 25, 100]), "steps 10,50,25,100: steps must increase"),
        (LIVE_BLUE, ReleaseRequest("m:v2", steps=[10, 10, 100]), "steps 10,10,100: steps must increase"),
        (LIVE_BLUE, ReleaseRequest("m:v2", steps=[10, 50]), "steps 10,50: the last step must be 100"),
        (LIVE_BLUE, ReleaseRequest("m:v2", steps=[0, 100]), "steps 0,100: each step must be a percentage in 1..100"),
        (LIVE_BLUE, ReleaseRequest("m:v2", steps=[]), "steps : must list at least one step, ending at 100"),
        (LIVE_BLUE, ReleaseRequest("m:v2", bake=-1), "bake -1s must not be negative"),
        (Observed(None, None, None), ReleaseRequest("m:v2"), "nothing is live to release against"),
        (LIVE_BLUE, ReleaseRequest("m:v2", migrations="/m", migrate_up="alembic upgrade head"),
         "give either --migrations DIR or --migrate-up COMMAND, not both"),
        (LIVE_BLUE, ReleaseRequest("m:v2", migrate_down="alembic downgrade -1"), "--migrate-down needs --migrate-up"),
    ],
)
def test_requests_that_cannot_be_carried_out_are_refused(observed: Observed, request_: ReleaseRequest,
                                                         message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        plan_release(observed, request_)
    assert info.value.message == message
    assert info.value.exit_code == 2


BUCKETS_0 = ((0.01, 0.0), (0.1, 0.0), (1.0, 0.0), (float("inf"), 0.0))


def test_p95_is_read_from_the_histogram_delta_over_the_bake() -> None:
    before = ((0.01, 100.0), (0.1, 100.0), (1.0, 100.0), (float("inf"), 100.0))
    # 100 new observations: 90 under 10ms, 10 between 100ms and 1s.
    after = ((0.01, 190.0), (0.1, 190.0), (1.0, 200.0), (float("inf"), 200.0))
    p95 = quantile(0.95, before, after)
    assert p95 is not None and p95 == pytest.approx(0.1 + 0.9 * 0.5)
    assert quantile(0.95, before, before) is None


@pytest.mark.parametrize(
    ("errors", "requests", "slow", "ok", "reason"),
    [
        (0, 100, 0, True, None),
        (1, 100, 0, True, None),  # exactly at 1 %
        (2, 100, 0, False, "error rate 2.0% (2 of 100) is above 1.0%"),
        (0, 100, 10, False, "p95 latency 550ms (server histogram) is above 500ms"),
    ],
)
def test_a_step_fails_on_error_rate_or_latency(errors: int, requests: int, slow: int, ok: bool,
                                               reason: str | None) -> None:
    before = Snapshot(0, 0, BUCKETS_0)
    after = Snapshot(requests, errors, ((0.01, requests - slow), (0.1, requests - slow), (1.0, requests),
                                        (float("inf"), requests)))
    verdict = judge(before, after, max_error_rate=0.01, max_p95_ms=500, min_requests=0)
    assert verdict.ok is ok
    assert verdict.reasons == ([] if reason is None else [reason])


def test_too_little_traffic_fails_when_a_minimum_is_set() -> None:
    verdict = judge(Snapshot(0, 0, BUCKETS_0), Snapshot(3, 0, BUCKETS_0), 0.01, 500, min_requests=10)
    assert verdict.reasons == ["only 3 requests reached it during the bake (analysis.min_requests = 10)"]


def test_the_live_image_with_other_settings_is_a_config_release() -> None:
    plan = plan_release(LIVE_BLUE, ReleaseRequest("m:v1", env={"K": "other", "NEW": "1"}))
    assert plan.version.startswith("v1+cfg.") and plan.reported_version == "v1"
    assert plan.config_changes == {"added": ["NEW"], "changed": ["K"]}
    assert "a config release of the live image: added NEW; changed K" in plan.describe()
    assert "other" not in str(plan.to_dict())  # keys only, never values
    again = plan_release(LIVE_BLUE, ReleaseRequest("m:v1", env={"K": "other", "NEW": "1"}))
    assert again.version == plan.version  # the same settings name the same config version


def _replicated(responses: int, errors: int, replicas: tuple[tuple[int, int], ...]) -> Snapshot:
    return Snapshot(responses, errors, BUCKETS_0, replicas=replicas)


def test_a_replica_that_died_once_does_not_count_its_redispatched_attempts_against_the_colour() -> None:
    before = _replicated(0, 0, ((0, 0), (0, 0), (0, 0)))
    after = _replicated(23, 2, ((1, 2), (0, 0), (0, 0)))  # replica 1 killed: 2 attempts sent elsewhere
    assert judge(before, after, 0.01, 500, min_requests=0).ok
    assert conclusive_failure(before, after, 0.01, 500, 0.99, 10) == []
    verdict = judge(before, after, 0.01, 500, min_requests=0)
    assert verdict.requests == 21 and verdict.error_rate == 0.0
    assert "1 replica(s) died and were taken out, their 2 failed attempts sent to others" in verdict.summary()


def test_answers_with_5xx_and_failures_of_replicas_still_up_count() -> None:
    before = _replicated(0, 0, ((0, 0), (0, 0), (0, 0)))
    five_hundreds = _replicated(100, 5, ((1, 0), (0, 0), (0, 0)))  # the errors are answers: nothing forgiven
    assert "error rate 5.0% (5 of 100) is above 1.0%" in judge(before, five_hundreds, 0.01, 500, 0).reasons
    refused = _replicated(100, 5, ((0, 5), (0, 0), (0, 0)))  # failed connections, but never taken out
    assert not judge(before, refused, 0.01, 500, 0).ok


def test_a_replica_that_keeps_dying_or_a_colour_lost_whole_fails_the_step() -> None:
    before = _replicated(0, 0, ((0, 0), (0, 0), (0, 0)))
    flapping = _replicated(100, 4, ((2, 4), (0, 0), (0, 0)))
    assert judge(before, flapping, 0.01, 500, 0).reasons == [
        "replica 1 was taken out 2 times: its tasks keep failing",
        "error rate 4.0% (4 of 100) is above 1.0%"]
    assert "replica 1 was taken out 2 times: its tasks keep failing" in conclusive_failure(
        before, flapping, 0.01, 500, 0.99, 10)
    lost = _replicated(100, 6, ((1, 2), (1, 2), (1, 2)))
    assert not judge(before, lost, 0.01, 500, 0).ok


def test_a_one_server_colour_is_never_forgiven_a_death() -> None:
    verdict = judge(_replicated(0, 0, ()), _replicated(100, 3, ()), 0.01, 500, 0)
    assert not verdict.ok
