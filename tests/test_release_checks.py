"""The team's own checks ([[release.checks]]) in real releases: web checks against a real HTTP server,
job checks in real containers, approvals answered from other processes; Docker and HAProxy real."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bluegreen.orchestrator.common.ports import free_ports
from tests.conftest import BLUEGREEN, Project, wait_for

V2 = "bluegreen-model:v2"
PYTHON = "/opt/model/bin/python"  # the reference image's interpreter (it has /bin/sh too)


@pytest.fixture
def live(project: Project, docker_client: Any) -> Project:
    """Blue serves v1; releases bake briefly."""
    project.env.update({"BLUEGREEN_RELEASE__BAKE": "0.2s", "BLUEGREEN_ENVIRONMENTS__HEALTH_TIMEOUT": "30"})
    result = project.run("up")
    assert result.code == 0, result.err
    return project


ANSWERS = {"/ok": (200, {"status": "ok", "score": 0.97}), "/down": (503, {"status": "down"}),
           "/degraded": (200, {"status": "degraded", "score": 0.41})}


class CheckServer:
    """A tiny HTTP server a web check asks: /ok, /down (503), /degraded (a worse value), /hang (no answer)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.release_hanging = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                server.seen.append({"path": parts.path, "query": parse_qs(parts.query),
                                    "headers": {k.lower(): v for k, v in self.headers.items()}})
                if parts.path == "/hang":
                    server.release_hanging.wait(120)  # holds the connection open without answering
                    return
                status, doc = ANSWERS[parts.path]
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        (self.port,) = free_ports(1)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.release_hanging.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def check_server() -> Iterator[CheckServer]:
    server = CheckServer()
    yield server
    server.close()


def add_checks(project: Project, text: str) -> None:
    """Append [[release.checks]] tables to the deployment's bluegreen.toml."""
    path = project.root / "bluegreen.toml"
    path.write_text(path.read_text() + "\n" + text)


def web_check(name: str, url: str, when: str = '["gate"]', extra: str = "") -> str:
    return f'[[release.checks]]\nname = "{name}"\nkind = "web"\nurl = "{url}"\nwhen = {when}\n{extra}\n'


def status(project: Project) -> dict[str, Any]:
    result = project.run("status", "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def last_release(project: Project) -> dict[str, Any]:
    return json.loads(project.run("history", "--json").out)["releases"][0]  # type: ignore[no-any-return]


def checks_by_step(rec: dict[str, Any]) -> dict[str, list[tuple[str, bool]]]:
    return {s["name"]: [(c["name"], c["ok"]) for c in s["detail"]["checks"]]
            for s in rec["steps"] if s["detail"].get("checks")}


def assert_blue_serves_v1_alone(project: Project) -> None:
    s = status(project)
    assert (s["live"], s["weights"]) == ("blue", {"blue": 100, "green": 0})
    assert s["environments"]["green"]["container"] == "absent"
    with httpx.Client(timeout=5) as client:
        served = Counter(client.get(f"{project.proxy_url}/version").json()["version"] for _ in range(10))
    assert served == Counter(v1=10)


def check_containers(project: Project) -> list[str]:
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=bluegreen.project={project.name}",
                             "--filter", "label=bluegreen.task=check"], capture_output=True, text=True, check=True)
    return listed.stdout.split()


# -- web ------------------------------------------------------------------------------------------------
def test_web_checks_run_at_the_gate_after_each_step_and_before_promotion(live: Project,
                                                                         check_server: CheckServer) -> None:
    url = check_server.url("/ok") + "?candidate={candidate}&live={live}&version={version}"
    add_checks(live, web_check("smoke", url, '["gate", "step", "promote"]', 'pointer = "/status"\nequals = "ok"')
               + web_check("score", check_server.url("/ok"), '["promote"]', 'pointer = "/score"\nmin = 0.9'))
    plan = live.run("release", V2, "--steps", "50,100", "--dry-run")
    assert plan.code == 0, plan.err
    assert "then the checks smoke" in plan.out and "first the checks smoke, score" in plan.out
    assert "smoke (web, at the gate, each step, promotion; timeout 10s): GET http://127.0.0.1:" in plan.out
    result = live.run("release", V2, "--steps", "50,100", "--json")
    assert result.code == 0, result.err
    assert "gate: check smoke (web) passed in" in result.err and "/status is 'ok'" in result.err
    rec = last_release(live)
    assert rec["status"] == "promoted"
    assert checks_by_step(rec) == {"gate": [("smoke", True)], "shift-50": [("smoke", True)],
                                   "shift-100": [("smoke", True)], "promote": [("smoke", True), ("score", True)]}
    promote = next(s for s in rec["steps"] if s["name"] == "promote")["detail"]["checks"]
    assert promote[1]["value"] == 0.97 and promote[1]["status"] == 200 and promote[1]["seconds"] >= 0
    asked = [s for s in check_server.seen if "candidate" in s["query"]]
    assert len(asked) == 4  # gate, two steps, promotion
    assert asked[0]["query"] == {"candidate": [f"http://127.0.0.1:{live.green_port}"],
                                 "live": [f"http://127.0.0.1:{live.blue_port}"], "version": ["v2"]}
    assert asked[0]["headers"]["x-bluegreen-probe"] == "check"
    history = live.run("history")
    assert "check score (web) at promote: ok" in history.out


@pytest.mark.parametrize(
    ("path", "when", "extra", "failed_at", "reason"),
    [
        ("/down", '["step"]', "", "shift-50", "answered 503, not 200"),
        ("/degraded", '["gate"]', 'pointer = "/status"\nequals = "ok"', "gate", "/status is 'degraded', not 'ok'"),
        ("/degraded", '["promote"]', 'pointer = "/score"\nmin = 0.9', "promote", "/score is 0.41, below the "
                                                                                     "minimum 0.9"),
        ("/hang", '["gate"]', 'timeout = "1s"', "gate", "did not answer within 1s"),
    ],
    ids=["status", "pointer-equals", "pointer-min", "hanging"],
)
def test_a_failing_web_check_rolls_the_release_back(live: Project, check_server: CheckServer, path: str,
                                                    when: str, extra: str, failed_at: str, reason: str) -> None:
    add_checks(live, web_check("smoke", check_server.url(path), when, extra))
    result = live.run("release", V2, "--steps", "50,100")
    assert result.code == 11, result.err
    assert f"release of v2 failed at {failed_at}: check smoke (web): GET {check_server.url(path)}" in result.err
    assert reason in result.err and "traffic is back on blue (v1)" in result.err
    assert_blue_serves_v1_alone(live)
    rec = last_release(live)
    assert rec["status"] == "rolled_back" and reason in rec["reason"]
    failed = rec["steps"][-1]
    assert (failed["name"], failed["outcome"]) == (failed_at, "failed")
    [check] = failed["detail"]["checks"]
    assert (check["name"], check["kind"], check["ok"], check["timed_out"]) == ("smoke", "web", False,
                                                                               path == "/hang")
    if path == "/hang":
        assert check["seconds"] >= 1.0  # it waited its timeout out, then gave up
    elif failed_at == "shift-50":
        assert failed["detail"]["weights"] == {"green": 50, "blue": 50}  # what the step had seen is kept too


# -- job ------------------------------------------------------------------------------------------------
def test_a_job_check_runs_a_container_that_reaches_the_candidate(live: Project) -> None:
    fetch = (f"{PYTHON} -c \\\"import os, urllib.request; "
             "print(urllib.request.urlopen(os.environ['CANDIDATE_URL'] + '/version').read().decode())\\\"")
    add_checks(live, '[[release.checks]]\nname = "contract"\nkind = "job"\nwhen = ["gate"]\n'
                     f'command = ["sh", "-c", "echo checking $CANDIDATE_VERSION at $BLUEGREEN_CHECK_POINT; {fetch}"]\n')
    result = live.run("release", V2, "--steps", "100")
    assert result.code == 0, result.err
    assert "gate: check contract: running bluegreen-model:v2 sh -c" in result.err
    assert "gate: check contract (job) passed in" in result.err and "exited with 0" in result.err
    [check] = next(s for s in last_release(live)["steps"] if s["name"] == "gate")["detail"]["checks"]
    assert check["exit_code"] == 0 and check["ok"]
    assert "checking v2 at gate" in check["output"]
    assert '"version": "v2"' in check["output"] or '"version":"v2"' in check["output"]  # the candidate answered
    assert check_containers(live) == []  # removed once done


def test_a_failing_job_check_fails_the_release_and_its_output_is_kept(live: Project) -> None:
    add_checks(live, '[[release.checks]]\nname = "contract"\nkind = "job"\nwhen = ["step"]\n'
                     'command = ["sh", "-c", "echo 12 cases run; echo case 7 broke the contract >&2; exit 3"]\n')
    result = live.run("release", V2, "--steps", "50,100")
    assert result.code == 11, result.err
    assert "failed at shift-50: check contract (job): bluegreen-model:v2 exited with 3" in result.err
    assert "    case 7 broke the contract" in result.err  # its output, shown as it fails
    assert_blue_serves_v1_alone(live)
    failed = last_release(live)["steps"][-1]
    [check] = failed["detail"]["checks"]
    assert (failed["name"], check["exit_code"], check["ok"]) == ("shift-50", 3, False)
    assert "12 cases run" in check["output"] and "case 7 broke the contract" in check["output"]
    assert "case 7 broke the contract" in live.run("history").out
    assert check_containers(live) == []


def test_a_hanging_job_check_is_killed_and_removed_at_its_timeout(live: Project) -> None:
    add_checks(live, '[[release.checks]]\nname = "soak"\nkind = "job"\nwhen = ["gate"]\ntimeout = "2s"\n'
                     'command = ["sh", "-c", "echo soaking; sleep 600"]\n')
    result = live.run("release", V2, "--steps", "100")
    assert result.code == 11, result.err
    assert "failed at gate: check soak (job): bluegreen-model:v2 still ran after 2s: killed and removed" in result.err
    assert_blue_serves_v1_alone(live)
    [check] = last_release(live)["steps"][-1]["detail"]["checks"]
    assert check["timed_out"] and check["exit_code"] is None and "soaking" in check["output"]
    assert check_containers(live) == []  # no job container left behind, running or stopped


def test_a_job_check_whose_image_is_missing_is_refused_before_anything_changes(live: Project) -> None:
    add_checks(live, '[[release.checks]]\nname = "contract"\nkind = "job"\nimage = "no-such-tests:1"\n')
    result = live.run("release", V2)
    assert result.code == 6, result.err
    assert result.err.startswith("Error: image no-such-tests:1 is not on the Docker engine")
    assert_blue_serves_v1_alone(live)
    assert json.loads(live.run("history", "--json").out)["releases"] == []


# -- approval -------------------------------------------------------------------------------------------
def approval(when: str = '["gate"]', timeout: str = "120s", on_timeout: str = "rollback") -> str:
    return (f'[[release.checks]]\nname = "sign-off"\nkind = "approval"\nwhen = {when}\ntimeout = "{timeout}"\n'
            f'on_timeout = "{on_timeout}"\n')


@pytest.fixture
def background(live: Project) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def start_release(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*BLUEGREEN, "release", V2, *args], cwd=project.root, text=True,
                            env={**os.environ, **project.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_approval(project: Project) -> dict[str, Any]:
    def waiting() -> dict[str, Any] | None:
        rel = status(project)["release"]
        return rel["awaiting_approval"] if rel else None

    found = wait_for(waiting, timeout=90, interval=0.2)
    assert found, status(project)
    return found  # type: ignore[no-any-return]


def test_an_approval_is_given_by_bluegreen_promote_from_another_terminal(
        live: Project, background: list[subprocess.Popen[str]]) -> None:
    add_checks(live, approval())
    release = start_release(live, "--steps", "50,100")
    background.append(release)
    waiting = wait_for_approval(live)
    assert (waiting["check"], waiting["step"], waiting["on_timeout"]) == ("sign-off", "gate", "rollback")
    assert "waiting for approval sign-off" in live.run("status").out
    approved = live.run("promote")
    assert approved.code == 0, approved.err
    assert approved.out.strip() == "release 1 of v2: approved sign-off at gate; it goes on"
    _out, err = release.communicate(timeout=120)
    assert release.returncode == 0, err
    assert "gate: waiting up to 120s for approval sign-off: bluegreen promote approves" in err
    assert "gate: check sign-off (approval) passed in" in err and "approved by tester" in err
    rec = last_release(live)
    assert rec["status"] == "promoted"
    # Approval is not promotion: every step still ran.
    assert [(s["name"], s["outcome"]) for s in rec["steps"]][-3:] == [("shift-50", "done"), ("shift-100", "done"),
                                                                       ("promote", "done")]
    [check] = next(s for s in rec["steps"] if s["name"] == "gate")["detail"]["checks"]
    assert (check["ok"], check["by"], check["timed_out"]) == (True, "tester", False)
    assert status(live)["live"] == "green"


def test_an_approval_is_rejected_by_bluegreen_abort(live: Project, background: list[subprocess.Popen[str]]) -> None:
    add_checks(live, approval('["step"]'))
    release = start_release(live, "--steps", "50,100")
    background.append(release)
    assert wait_for_approval(live)["step"] == "shift-50"
    aborted = live.run("abort")
    assert aborted.code == 0, aborted.err
    assert aborted.out.strip() == "release 1 of v2: aborted (approval sign-off rejected by tester)"
    _out, err = release.communicate(timeout=120)
    assert release.returncode == 12, err
    assert "release of v2 approval sign-off rejected by tester at shift-50; traffic is back on blue (v1)" in err
    assert_blue_serves_v1_alone(live)
    [check] = last_release(live)["steps"][-1]["detail"]["checks"]
    assert (check["ok"], check["rejected"], check["by"]) == (False, True, "tester")


@pytest.mark.parametrize(("on_timeout", "code", "status_"), [("rollback", 11, "rolled_back"),
                                                             ("proceed", 0, "promoted")])
def test_an_approval_nobody_gives_ends_as_on_timeout_says(live: Project, on_timeout: str, code: int,
                                                          status_: str) -> None:
    add_checks(live, approval('["promote"]', "1s", on_timeout))
    result = live.run("release", V2, "--steps", "100")
    assert result.code == code, result.err
    rec = last_release(live)
    assert rec["status"] == status_
    [check] = next(s for s in rec["steps"] if s["name"] == "promote")["detail"]["checks"]
    assert (check["timed_out"], check["ok"], check["by"]) == (True, on_timeout == "proceed", "")
    if on_timeout == "rollback":
        assert "failed at promote: check sign-off (approval): nobody approved within 1s" in result.err
        assert_blue_serves_v1_alone(live)
    else:
        assert "nobody answered within 1s; proceeding" in result.err
        assert status(live)["live"] == "green"


def test_promote_without_a_waiting_approval_still_skips_the_remaining_steps_and_approves_what_follows(
        live: Project, background: list[subprocess.Popen[str]]) -> None:
    """A promotion asked for mid-bake skips the steps, and stands as the approval at promotion."""
    add_checks(live, approval('["promote"]'))
    release = start_release(live, "--steps", "10,50,100", "--bake", "60s")
    background.append(release)
    assert wait_for(lambda: (status(live)["release"] or {}).get("step") == "shift-10", timeout=90, interval=0.2)
    promoted = live.run("promote")
    assert promoted.code == 0, promoted.err
    assert promoted.out.startswith("release 1 of v2: promoted")
    release.communicate(timeout=60)
    assert release.returncode == 0
    rec = last_release(live)
    steps = {s["name"]: s["outcome"] for s in rec["steps"]}
    assert (steps["shift-50"], steps["promote"]) == ("skipped", "done")
    [check] = next(s for s in rec["steps"] if s["name"] == "promote")["detail"]["checks"]
    assert (check["ok"], check["by"]) == (True, "tester")
