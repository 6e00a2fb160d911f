"""kill -9 of a release at every journaled step (12 points), then recovery: traffic always ends on a healthy colour.

The crash is injected with BLUEGREEN_FAULT_CRASH_AT=<step>:<before|after>, which makes the release
SIGKILL itself at exactly that point, as an OOM kill or a power cut would.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import Project

STEPS = ["backup", "start", "gate", "shift-50", "shift-100", "promote"]
CRASH_POINTS = [f"{step}:{phase}" for step in STEPS for phase in ("before", "after")]


@pytest.fixture
def live(project: Project, docker_client: Any) -> Project:
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s"})
    assert project.run("up").code == 0
    return project


def crash_release(project: Project, point: str) -> None:
    result = project.run("release", "bluegreen-model:v2", "--steps", "50,100",
                         env={"BLUEGREEN_FAULT_CRASH_AT": point})
    assert result.code == -9, (result.code, result.err)


def status(project: Project) -> dict[str, Any]:
    return json.loads(project.run("status", "--json").out)  # type: ignore[no-any-return]


def served(project: Project, n: int = 20) -> Counter[str]:
    with httpx.Client(timeout=5) as client:
        return Counter(client.get(f"{project.proxy_url}/version").json()["version"] for _ in range(n))


def assert_settled_on(project: Project, color: str, version: str) -> None:
    s = status(project)
    assert s["release"] is None and s["lock"] is None
    assert s["live"] == color
    assert s["weights"] == {color: 100, ("green" if color == "blue" else "blue"): 0}
    assert s["environments"][color]["healthy"] is True
    assert served(project) == Counter({version: 20})


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_recover_after_kill_9_at_each_step(live: Project, point: str) -> None:
    crash_release(live, point)
    before = status(live)
    assert before["release"]["interrupted"] is True and before["lock"] is None
    result = live.run("recover")
    assert result.code == 0, result.err
    if point == "promote:after":
        # Everything was done but recording the end: the promotion stands.
        assert "release 1 had completed; recorded it as promoted" in result.out
        assert_settled_on(live, "green", "v2")
        return
    assert f"recovered release 1 (interrupted at {point.split(':')[0]}): traffic on blue" in result.out
    assert_settled_on(live, "blue", "v1")
    assert status(live)["environments"]["green"]["container"] == "absent"
    [rec] = json.loads(live.run("history", "--json").out)["releases"]
    assert rec["status"] == "rolled_back" and rec["reason"].startswith(f"interrupted at step {point.split(':')[0]} ")


def test_the_next_command_notices_an_interrupted_release(live: Project) -> None:
    crash_release(live, "shift-50:after")
    result = live.run("up")
    assert result.code == 0, result.err
    assert "was interrupted at step shift-50: recovering" in result.err
    assert_settled_on(live, "blue", "v1")


def test_a_dead_serving_colour_hands_traffic_to_the_proven_candidate(live: Project) -> None:
    crash_release(live, "shift-100:after")
    subprocess.run(["docker", "rm", "-f", f"{live.name}-blue"], check=True, capture_output=True)
    result = live.run("recover")
    assert result.code == 0, result.err
    assert_settled_on(live, "green", "v2")
    [rec] = json.loads(live.run("history", "--json").out)["releases"]
    assert rec["status"] == "recovered"
    assert "blue was not healthy, so green (which passed its gate) kept the traffic" in rec["reason"]


def test_an_unproven_candidate_never_gets_traffic_even_when_the_old_colour_died(live: Project) -> None:
    crash_release(live, "start:after")  # the candidate runs but never passed its gate
    subprocess.run(["docker", "rm", "-f", f"{live.name}-blue"], check=True, capture_output=True)
    result = live.run("recover")
    assert result.code == 0, result.err
    assert "neither colour is healthy: starting blue again with bluegreen-model:v1" in result.err
    assert_settled_on(live, "blue", "v1")
