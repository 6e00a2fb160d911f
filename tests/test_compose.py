"""Colours of two services from a compose file, on real containers: the API behind the proxy and a
queue consumer that follows the traffic. Under a steady stream of jobs, a release and a rollback
do every job exactly once (attempts 1), stamped with the version that was live when it was taken;
a consumer that crashes on start fails the release and the old consumers come back; a consumer
killed -9 holding jobs loses none (they are taken again: attempts 2)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bluegreen.orchestrator.demo import Jobs
from tests.conftest import Project, wait_for

COMPOSE = """\
services:
  api:
    image: bluegreen-model:v1
  prediction-consumer:
    image: bluegreen-model:v1
    environment:
      ROLE: consumer
      JOB_LEASE_SECONDS: "3"
      JOB_BATCH: "10"
      FAULT_CRASH_ON_START: ${CONSUMER_CRASH:-}
      FAULT_UNHEALTHY: ${CONSUMER_UNHEALTHY:-}
      FAULT_JOB_WORK_MS: ${CONSUMER_WORK_MS:-0}
    healthcheck:
      test: ["CMD", "/opt/model/bin/python", "/app/app.py", "--consumer-health"]
      interval: 500ms
      timeout: 5s
      retries: 3
      start_period: 1s
    stop_grace_period: 15s
"""


def jobs_table(project: Project) -> list[tuple[int, str, str | None, int, float | None]]:
    with sqlite3.connect(f"file:{project.db_path}?mode=ro", uri=True, timeout=60) as db:
        db.execute("PRAGMA busy_timeout = 60000")
        return db.execute("SELECT id, status, version, attempts, taken_at FROM jobs ORDER BY id").fetchall()


def all_done(project: Project, ids: list[int]) -> bool:
    rows = {r[0]: r for r in jobs_table(project)}
    return all(rows.get(i, (0, ""))[1] == "done" for i in ids)


@pytest.fixture
def composed(project: Project, docker_client: Any) -> Iterator[Project]:
    (project.root / "compose.yaml").write_text(COMPOSE)
    project.env.update({
        "BLUEGREEN_ENVIRONMENTS__COMPOSE": "compose.yaml",
        "BLUEGREEN_ENVIRONMENTS__WITH": '["prediction-consumer"]',
        "BLUEGREEN_WORKERS__LAG_QUERY": "SELECT count(*) FROM jobs WHERE status = 'queued'",
        "BLUEGREEN_WORKERS__WATCH": "2s",
        "BLUEGREEN_RELEASE__BAKE": "1s",
    })
    up = project.run("up", "--json", timeout=300)
    assert up.code == 0, up.err
    assert any("started blue's workers" in c for c in json.loads(up.out)["changed"]), up.out
    yield project
    project.run("down", timeout=120)


def worker(docker_client: Any, project: Project, color: str) -> Any:
    return docker_client.containers.get(f"{project.name}-{color}-prediction-consumer")


def test_a_release_and_a_rollback_do_every_job_exactly_once_with_the_live_version(
        composed: Project, docker_client: Any) -> None:
    project = composed
    assert docker_client.containers.get(f"{project.name}-blue-api").status == "running"
    status = json.loads(project.run("status", "--json").out)
    [blue_worker] = status["workers"]["blue"]
    assert (blue_worker["state"], blue_worker["health"], blue_worker["version"]) == ("running", "healthy", "v1")
    assert status["workers"]["green"][0]["state"] == "absent"

    jobs = Jobs(project.proxy_url, pause=0.01)
    try:
        release = project.run("release", "bluegreen-model:v2", "--steps", "50,100", timeout=300)
        assert release.code == 0, release.err
        assert "draining blue's prediction-consumer" in release.err
        assert release.err.index("draining blue's") < release.err.index("starting green's prediction-consumer")
        assert worker(docker_client, project, "green").labels["bluegreen.version"] == "v2"
        rollback = project.run("rollback", timeout=300)
        assert rollback.code == 0, rollback.err
        assert wait_for(lambda: worker(docker_client, project, "blue").status == "running", timeout=30)
    finally:
        jobs.stop()
    assert jobs.failed == 0 and len(jobs.ids) > 100, (len(jobs.ids), jobs.failed)
    assert wait_for(lambda: all_done(project, jobs.ids), timeout=60)
    rows = [r for r in jobs_table(project) if r[0] in set(jobs.ids)]
    assert {r[3] for r in rows} == {1}, [r for r in rows if r[3] != 1][:5]  # none done twice, none retried
    # Taken in time order, the versions run v1…, v2…, v1…: never two versions consuming at once.
    by_take = [r[2] for r in sorted(rows, key=lambda r: r[4] or 0)]
    runs = [v for i, v in enumerate(by_take) if i == 0 or by_take[i - 1] != v]
    assert runs in (["v1", "v2", "v1"], ["v1", "v2"], ["v2", "v1"]), runs[:10]
    assert "v2" in runs
    job = httpx.get(f"{project.proxy_url}/jobs/{jobs.ids[0]}").json()
    assert (job["status"], job["version"], job["attempts"]) == ("done", "v1", 1)
    assert job["prediction"] in ("setosa", "versicolor", "virginica")
    assert httpx.get(f"{project.proxy_url}/jobs/999999999").status_code == 404
    bad = httpx.post(f"{project.proxy_url}/jobs", json={"features": [1, 2]})
    assert bad.status_code == 400 and "4 numbers" in bad.json()["error"]
    import docker

    with pytest.raises(docker.errors.NotFound):
        worker(docker_client, project, "green")  # the rolled-back colour's worker was drained


@pytest.mark.parametrize(("fault", "said"), [
    ({"CONSUMER_CRASH": "v2"}, "FAULT_CRASH_ON_START is set"),  # only the new version's consumer crashes
    ({"CONSUMER_UNHEALTHY": "v2"}, "prediction-consumer unhealthy"),  # its healthcheck fails; docker says so
])
def test_a_consumer_that_crashes_or_never_gets_healthy_fails_the_release_and_the_old_ones_come_back(
        composed: Project, docker_client: Any, fault: dict[str, str], said: str) -> None:
    project = composed
    jobs = Jobs(project.proxy_url, pause=0.02)
    try:
        release = project.run("release", "bluegreen-model:v2", "--steps", "100", timeout=300, env=fault)
    finally:
        jobs.stop()
    assert release.code == 11, release.err
    assert "green's prediction-consumer" in release.err and said in release.err, release.err
    assert "starting blue's workers again" in release.err or "starting blue's prediction-consumer" in release.err
    assert wait_for(lambda: worker(docker_client, project, "blue").status == "running", timeout=30)
    assert httpx.get(f"{project.proxy_url}/version").json()["version"] == "v1"
    assert jobs.failed == 0
    assert wait_for(lambda: all_done(project, jobs.ids), timeout=60)  # nothing lost while they were away


def test_a_consumer_killed_holding_jobs_loses_none(project: Project, docker_client: Any) -> None:
    (project.root / "compose.yaml").write_text(COMPOSE)
    project.env.update({"BLUEGREEN_ENVIRONMENTS__COMPOSE": "compose.yaml",
                        "BLUEGREEN_ENVIRONMENTS__WITH": '["prediction-consumer"]', "CONSUMER_WORK_MS": "400"})
    try:
        assert project.run("up", timeout=300).code == 0
        jobs = Jobs(project.proxy_url, pause=0.01)
        try:
            assert wait_for(lambda: any(r[1] == "taken" for r in jobs_table(project)), timeout=30)
            pid = worker(docker_client, project, "blue").attrs["State"]["Pid"]
            os.kill(pid, signal.SIGKILL)  # dies holding a batch of jobs
            time.sleep(0.5)
        finally:
            jobs.stop()
        assert wait_for(lambda: all_done(project, jobs.ids), timeout=90)  # its restart (or lease) takes them again
        rows = [r for r in jobs_table(project) if r[0] in set(jobs.ids)]
        assert max(r[3] for r in rows) == 2 and {r[3] for r in rows} <= {1, 2}
        assert all(r[1] == "done" for r in rows)
    finally:
        project.run("down", timeout=120)


def test_a_compose_key_that_is_not_carried_over_is_refused_with_its_line(project: Project) -> None:
    (project.root / "compose.yaml").write_text(COMPOSE.replace("    image: bluegreen-model:v1\n  prediction",
                                                               "    image: bluegreen-model:v1\n    ports: [\"80:80\"]\n"
                                                               "  prediction", 1))
    refused = project.run("up", env={"BLUEGREEN_ENVIRONMENTS__COMPOSE": "compose.yaml",
                                     "BLUEGREEN_ENVIRONMENTS__WITH": '["prediction-consumer"]'})
    assert refused.code == 2, refused.err
    assert "compose.yaml:4: service 'api' uses 'ports'" in refused.err and "edit line 4" in refused.err


def test_only_one_service_is_released_and_rolled_back(composed: Project, docker_client: Any) -> None:
    project = composed

    def versions() -> dict[str, str]:
        s = json.loads(project.run("status", "--json").out)
        live = s["live"]
        return {"live": live, "api": s["environments"][live]["version"],
                "consumer": next(w["version"] for w in s["workers"][live] if w["state"] == "running")}

    worker_only = project.run("release", "bluegreen-model:v2", "--only", "prediction-consumer", timeout=300)
    assert worker_only.code == 0, worker_only.err
    assert versions() == {"live": "blue", "api": "v1", "consumer": "v2"}  # no traffic moved
    assert httpx.get(f"{project.proxy_url}/version").json()["version"] == "v1"
    back = project.run("rollback", "--only", "prediction-consumer", timeout=300)
    assert back.code == 0, back.err
    assert versions() == {"live": "blue", "api": "v1", "consumer": "v1"}

    api_only = project.run("release", "bluegreen-model:v2", "--only", "api", "--steps", "100", timeout=300)
    assert api_only.code == 0, api_only.err
    assert versions() == {"live": "green", "api": "v2", "consumer": "v1"}  # the worker followed at its version
    api_back = project.run("rollback", "--only", "api", timeout=300)
    assert api_back.code == 0, api_back.err
    assert versions() == {"live": "blue", "api": "v1", "consumer": "v1"}

    history = json.loads(project.run("history", "--json").out)["releases"]
    assert any(r.get("plan", {}).get("only") == "prediction-consumer" for r in history), history[:3]
    unknown = project.run("release", "bluegreen-model:v2", "--only", "scorer")
    assert unknown.code == 2 and "not a service of the colour (it has api, prediction-consumer)" in unknown.err


def test_a_postgresql_queue_is_switched_with_every_job_done_once(project: Project, docker_client: Any) -> None:
    import uuid

    import psycopg

    from tests.test_backups_postgres import PG_ADMIN

    name = f"bg_jobs_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(PG_ADMIN, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    (project.root / "compose.yaml").write_text(COMPOSE)
    project.env.update({"BLUEGREEN_ENVIRONMENTS__COMPOSE": "compose.yaml", "BLUEGREEN_DATABASE__URL": url,
                        "BLUEGREEN_ENVIRONMENTS__WITH": '["prediction-consumer"]', "BLUEGREEN_RELEASE__BAKE": "1s",
                        "BLUEGREEN_WORKERS__WATCH": "2s",
                        "BLUEGREEN_WORKERS__LAG_QUERY": "SELECT count(*) FROM jobs WHERE status = 'queued'"})
    try:
        assert project.run("up", timeout=300).code == 0
        jobs = Jobs(project.proxy_url, pause=0.01)
        try:
            release = project.run("release", "bluegreen-model:v2", "--steps", "100", timeout=300)
            assert release.code == 0, release.err
        finally:
            jobs.stop()
        assert jobs.failed == 0 and len(jobs.ids) > 50

        def rows() -> dict[int, tuple[str, int, str]]:
            with psycopg.connect(url) as conn:
                return {r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT id, status, attempts, version "
                                                                        "FROM jobs")}
        assert wait_for(lambda: all(rows().get(i, ("",))[0] == "done" for i in jobs.ids), timeout=60)
        done = rows()
        assert {done[i][1] for i in jobs.ids} == {1} and {done[i][2] for i in jobs.ids} == {"v1", "v2"}
    finally:
        project.run("down", timeout=120)
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_with_overlap_both_colours_consume_during_the_steps_and_no_job_is_done_twice(
        composed: Project, docker_client: Any) -> None:
    project = composed
    jobs = Jobs(project.proxy_url, pause=0.01)
    try:
        release = project.run("release", "bluegreen-model:v2", "--steps", "50,100", timeout=300,
                              env={"BLUEGREEN_WORKERS__OVERLAP": "true"})
        assert release.code == 0, release.err
    finally:
        jobs.stop()
    # The candidate's consumer started with its API, before any traffic moved; the old one left at promotion.
    assert release.err.index("starting green's prediction-consumer") < release.err.index("shift-50")
    assert release.err.index("shift-100") < release.err.index("draining blue's prediction-consumer")
    assert wait_for(lambda: all_done(project, jobs.ids), timeout=60)
    rows = [r for r in jobs_table(project) if r[0] in set(jobs.ids)]
    assert {r[3] for r in rows} == {1} and {r[2] for r in rows} == {"v1", "v2"}
    assert worker(docker_client, project, "green").status == "running"
