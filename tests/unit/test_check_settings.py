"""[[release.checks]]: the commented example loads, every bad check is refused naming where it is and
why, the plan places each check where its `when` says, and the pure parts of the runners."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bluegreen.orchestrator.analysis import checks
from bluegreen.orchestrator.core.checks import planned
from bluegreen.orchestrator.core.plan import Observed, ReleaseRequest, plan_release
from bluegreen.orchestrator.errors import ConfigError
from bluegreen.orchestrator.settings.core import default_toml
from bluegreen.orchestrator.settings.model import ApprovalCheck, JobCheck, Settings, WebCheck, load_settings
from tests.conftest import write_settings as write

pytestmark = pytest.mark.usefixtures("no_bluegreen_variables")

LIVE_BLUE = Observed(live_color="blue", live_image="m:v1", live_version="v1", live_running=True)


def commented_example() -> str:
    """The [[release.checks]] tables shown commented out in default.toml, uncommented."""
    lines = default_toml().splitlines()
    start = lines.index("# [[release.checks]]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(re.sub(r"^# ?", "", line))
    return "\n".join(block) + "\n"


def test_the_commented_example_in_the_default_file_loads_as_one_check_of_each_kind(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, default_toml() + "\n" + commented_example()))
    web, job, approval = s.release.checks
    assert isinstance(web, WebCheck) and isinstance(job, JobCheck) and isinstance(approval, ApprovalCheck)
    assert (web.name, web.url, web.when, web.pointer, web.equals, web.timeout, web.status) == (
        "smoke", "{candidate}/health", ["gate", "step"], "/status", "ok", 5.0, [200])
    assert (job.image, job.command[:2], job.when, job.timeout) == ("bluegreen-model:v2", ["sh", "-c"], ["gate"], 120.0)
    assert (approval.when, approval.timeout, approval.on_timeout) == (["promote"], 3600.0, "rollback")


def test_without_checks_a_release_has_none(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, default_toml())).release.checks == []


def test_when_is_kept_in_release_order_and_defaults_to_the_gate(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[[release.checks]]\nname = "a"\nkind = "approval"\nwhen = ["promote", "gate"]\n'
                                      '[[release.checks]]\nname = "b"\nkind = "web"\nurl = "https://x.example/ok"\n'))
    assert [c.when for c in s.release.checks] == [["gate", "promote"], ["gate"]]


def check(body: str) -> str:
    return f'[[release.checks]]\nname = "smoke"\n{body}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (check('url = "{candidate}/health"'),
         'release.checks.0 (in bluegreen.toml) needs kind = one of "web", "job", "approval"'),
        (check('kind = "grpc"'), 'release.checks.0.kind = \'grpc\' (in bluegreen.toml): must be one of "web", "job", '
                                 '"approval"'),
        (check('kind = "web"'), "release.checks.0.url is required (in bluegreen.toml)"),
        (check('kind = "web"\nurl = "{candiate}/health"'),
         "release.checks.0.url = '{candiate}/health' (in bluegreen.toml): {candiate} is not a placeholder a check "
         "fills in (those are {candidate}, {live}, {version})"),
        (check('kind = "web"\nurl = "ftp://files/health"'),
         "release.checks.0.url = 'ftp://files/health' (in bluegreen.toml): must be an http:// or https:// URL, or "
         'start with {candidate} or {live} (e.g. "{candidate}/health")'),
        (check('kind = "web"\nurl = "/health"'),
         "release.checks.0.url = '/health' (in bluegreen.toml): must be an http:// or https:// URL, or "
         'start with {candidate} or {live} (e.g. "{candidate}/health")'),
        (check('kind = "web"\nurl = "{candidate}/h"\nheaders = { X-Target = "{colour}" }'),
         "release.checks.0.headers.X-Target = '{colour}' (in bluegreen.toml): {colour} is not a placeholder a "
         "check fills in (those are {candidate}, {live}, {version})"),
        (check('kind = "web"\nurl = "{candidate}/h"\npointer = "status"\nequals = "ok"'),
         "release.checks.0.pointer = 'status' (in bluegreen.toml): must be a JSON pointer: \"\" for the whole "
         "value, or /key/0/…"),
        (check('kind = "web"\nurl = "{candidate}/h"\npointer = "/a~2b"\nequals = "ok"'),
         "release.checks.0.pointer = '/a~2b' (in bluegreen.toml): ~ in a JSON pointer must be ~0 (a ~) or ~1 (a /)"),
        (check('kind = "web"\nurl = "{candidate}/h"\npointer = "/status"'),
         "release.checks.0 (smoke): pointer = '/status' needs a condition: equals, min or max"),
        (check('kind = "web"\nurl = "{candidate}/h"\nmin = 0.9'),
         'release.checks.0 (smoke): min judge a value in the answer: set pointer too (a JSON pointer such as '
         '"/status")'),
        (check('kind = "web"\nurl = "{candidate}/h"\npointer = "/s"\nequals = 1\nmax = 2'),
         "release.checks.0 (smoke): give either equals or min/max, not both"),
        (check('kind = "web"\nurl = "{candidate}/h"\npointer = "/s"\nmin = 2\nmax = 1'),
         "release.checks.0 (smoke): min = 2 is above max = 1: nothing could pass"),
        (check('kind = "web"\nurl = "{candidate}/h"\nstatus = [200, 700]'),
         "release.checks.0.status.1 = 700 (in bluegreen.toml): Input should be less than or equal to 599"),
        (check('kind = "web"\nurl = "{candidate}/h"\ntimeout = "0s"'),
         "release.checks.0.timeout = 0.0 (in bluegreen.toml): Input should be greater than 0"),
        (check('kind = "web"\nurl = "{candidate}/h"\ntimeout = "soon"'),
         "release.checks.0.timeout = 'soon' (in bluegreen.toml): must be a duration such as 30s, 500ms, 2m or a "
         "number of seconds"),
        (check('kind = "web"\nurl = "{candidate}/h"\nwhen = ["after"]'),
         "release.checks.0.when.0 = 'after' (in bluegreen.toml): Input should be 'gate', 'step' or 'promote'"),
        (check('kind = "web"\nurl = "{candidate}/h"\nwhen = ["step", "step"]'),
         "release.checks.0.when = ['step', 'step'] (in bluegreen.toml): names a point twice"),
        (check('kind = "web"\nurl = "{candidate}/h"\nwhen = []'),
         "release.checks.0.when = [] (in bluegreen.toml): List should have at least 1 item after validation, not 0"),
        (check('kind = "job"'),
         'release.checks.0 (smoke): a job in the candidate\'s image (image = "") needs a command: its own command '
         "serves the model and never exits"),
        (check('kind = "job"\nimage = "smoke tests"\ncommand = ["true"]'),
         "release.checks.0.image = 'smoke tests' (in bluegreen.toml): must be an image reference such as "
         "smoke-tests:1.4"),
        (check('kind = "job"\ncommand = ["true"]\nenv = { TARGET = "{canidate}" }'),
         "release.checks.0.env.TARGET = '{canidate}' (in bluegreen.toml): {canidate} is not a placeholder a "
         "check fills in (those are {candidate}, {live}, {version})"),
        (check('kind = "job"\ncommand = ["true"]\non_timeout = "proceed"'),
         "unknown key release.checks.0.on_timeout (in bluegreen.toml)"),
        (check('kind = "approval"\non_timeout = "wait"'),
         "release.checks.0.on_timeout = 'wait' (in bluegreen.toml): Input should be 'rollback' or 'proceed'"),
        (check('kind = "approval"\nurl = "{candidate}/h"'), "unknown key release.checks.0.url (in bluegreen.toml)"),
        ('[[release.checks]]\nname = "has space"\nkind = "approval"\n',
         "release.checks.0.name = 'has space' (in bluegreen.toml): String should match pattern "
         "'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'"),
        (check('kind = "approval"') + check('kind = "approval"'),
         "release.checks: two are named 'smoke'; each needs its own name (the history and the events tell them "
         "apart by it)"),
    ],
    ids=["no-kind", "unknown-kind", "web-without-url", "unknown-placeholder", "not-http", "relative-url",
         "header-placeholder", "pointer-syntax", "pointer-escape", "pointer-without-condition",
         "condition-without-pointer", "equals-and-bounds", "empty-range", "status-code", "zero-timeout",
         "timeout-words", "unknown-point", "point-twice", "no-point", "job-without-command", "image-reference",
         "env-placeholder", "on-timeout-on-a-job", "unknown-on-timeout", "approval-with-a-url", "name",
         "same-name-twice"],
)
def test_a_bad_check_is_refused_naming_where_it_is_and_why(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.message == f"invalid settings: {message}"


def test_the_plan_runs_each_check_where_its_when_says(tmp_path: Path) -> None:
    s = Settings(root=tmp_path, release={"checks": [
        {"name": "smoke", "kind": "web", "url": "{candidate}/health", "when": ["gate", "step"]},
        {"name": "load", "kind": "job", "image": "hey:1", "command": ["hey", "{candidate}/predict"],
         "when": ["step"], "timeout": "2m"},
        {"name": "sign-off", "kind": "approval", "when": ["promote"], "on_timeout": "proceed"}]})
    plan = plan_release(LIVE_BLUE, ReleaseRequest("m:v2", steps=[50, 100]), planned(s))
    assert {st.name: st.checks for st in plan.steps} == {
        "backup": (), "start": (), "gate": ("smoke",), "shift-50": ("smoke", "load"), "shift-100": ("smoke", "load"),
        "promote": ("sign-off",)}
    text = plan.describe()
    assert "3. gate: health gate: /version reports v2, /predict answers, quality vs blue; then the checks smoke" in text
    assert "6. promote: promote green; keep blue warm for rollback; first the checks sign-off" in text
    assert ("   load (job, at each step; timeout 120s): run hey:1: hey {candidate}/predict, passes on exit "
            "code 0") in text
    assert ("   sign-off (approval, at promotion; timeout 3600s): wait for bluegreen promote (or the API, or the "
            "dashboard's Approve); bluegreen abort rejects; no answer: proceed") in text
    shown = plan.to_dict()
    assert [c["name"] for c in shown["checks"]] == ["smoke", "load", "sign-off"]
    assert shown["steps"][2]["checks"] == ("smoke",)


@pytest.mark.parametrize(
    ("value", "equals", "low", "high", "problem"),
    [("ok", "ok", None, None, ""), ("degraded", "ok", None, None, "not 'ok'"), (1, True, None, None, "not True"),
     (True, 1, None, None, "not 1"), ("1", 1, None, None, "not 1"), (1.0, 1, None, None, ""),
     (None, "ok", None, None, "not 'ok'"), (0.95, None, 0.9, None, ""), (0.41, None, 0.9, None,
                                                                         "below the minimum 0.9"),
     (120, None, None, 100, "above the maximum 100"), ("0.95", None, 0.9, None, "not a number"),
     (True, None, 0, None, "not a number")],
)
def test_a_pointer_condition_compares_types_as_json_does(value: object, equals: object, low: float | None,
                                                         high: float | None, problem: str) -> None:
    assert checks.condition_problem(value, equals, low, high) == problem


def test_an_approval_takes_the_first_answer_and_otherwise_ends_as_on_timeout_says() -> None:
    answers = iter([None, None, ("approve", "ana")])
    given = checks.approval(ApprovalCheck(name="a", kind="approval", timeout=60), lambda: next(answers), poll=0)
    assert (given.ok, given.by, given.rejected, given.timed_out, given.detail) == (True, "ana", False, False,
                                                                                   "approved by ana")
    rejected = checks.approval(ApprovalCheck(name="a", kind="approval"), lambda: ("reject", "bo"), poll=0)
    assert (rejected.ok, rejected.rejected, rejected.detail) == (False, True, "rejected by bo")
    for on_timeout, ok in (("rollback", False), ("proceed", True)):
        quiet = checks.approval(ApprovalCheck(name="a", kind="approval", timeout=0.01, on_timeout=on_timeout),
                                lambda: None, poll=0.001)
        assert (quiet.ok, quiet.timed_out, quiet.by) == (ok, True, "")


def test_targets_fill_only_the_placeholders_a_check_knows() -> None:
    t = checks.Targets("http://127.0.0.1:8102", "http://127.0.0.1:8101", "v2", "v1", 7, "shift-25")
    assert t.fill('{candidate}/x?live={live}&v={version} {"json": {colour}}') == \
        'http://127.0.0.1:8102/x?live=http://127.0.0.1:8101&v=v2 {"json": {colour}}'
    assert t.env() == {"CANDIDATE_URL": "http://127.0.0.1:8102", "LIVE_URL": "http://127.0.0.1:8101",
                       "CANDIDATE_VERSION": "v2", "LIVE_VERSION": "v1", "BLUEGREEN_RELEASE": "7",
                       "BLUEGREEN_CHECK_POINT": "shift-25"}


def test_a_web_check_gives_up_at_its_timeout_even_on_an_answer_that_trickles_in() -> None:
    """A server that sends a byte every 0.2 s never trips a per-read timeout; the check's deadline holds."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            while not stop.wait(0.2):
                self.wfile.write(b" ")
                self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        t = checks.Targets(url, url, "v2", "v1", 1, "gate")
        result = checks.web(WebCheck(name="slow", kind="web", url="{candidate}/", timeout=1), t)
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
    assert (result.ok, result.timed_out) == (False, True)
    assert result.detail == f"GET {url}/ did not answer within 1s"
