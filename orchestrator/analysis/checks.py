"""The team's own checks of a candidate ([[release.checks]]): one function per kind.

- ``web``: an HTTP request; passes on its status and, optionally, a value found by a JSON pointer
  in its answer (equals, or min/max) — Argo Rollouts' web provider.
- ``job``: a container run to completion with the candidate's URL in its environment; passes on
  exit code 0, and its output is kept — Argo's job provider, Flagger's load-test webhook.
- ``approval``: waits for a person's answer, which the caller reads from wherever answers arrive
  (core/release.py: ``bluegreen promote`` approves, ``bluegreen abort`` rejects).

Each returns a :class:`CheckResult` and none outlasts its timeout (plus the moment it takes to
clean up): a web server that never answers fails the check when the timeout passes, a job still
running is killed and removed, an approval nobody gives ends as ``on_timeout`` says. The caller
decides what a failed check does to the release.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bluegreen.orchestrator.common.redact import redact_url
from bluegreen.orchestrator.errors import BluegreenError
from bluegreen.orchestrator.model.client import PROBE_HEADER, clip
from bluegreen.orchestrator.model.contract import ContractMismatch, pointer
from bluegreen.orchestrator.settings.core import fill_placeholders

if TYPE_CHECKING:
    from bluegreen.environments.runtime import DockerRuntime

MAX_BODY = 1024 * 1024  # bytes of a web check's answer read; a larger one fails the check
OUTPUT_LINES = 40  # lines of a job's output kept in the history
OUTPUT_CHARS = 4000
Answer = Callable[[], tuple[str, str] | None]  # ("approve" | "reject", who), or None: no answer yet


@dataclass(frozen=True)
class Targets:
    """What a check is about: the colours' URLs, the versions, and where in which release it runs."""

    candidate: str  # the candidate colour's base URL, e.g. http://127.0.0.1:8102
    live: str  # the serving colour's
    version: str  # the version being released
    live_version: str
    release: int
    point: str  # the step it runs at: gate, shift-25, promote

    def fill(self, text: str) -> str:
        """{candidate}, {live} and {version} in ``text`` replaced."""
        return fill_placeholders(text, {"candidate": self.candidate, "live": self.live, "version": self.version})

    def env(self) -> dict[str, str]:
        """The environment a job gets, before its own ``env``."""
        return {"CANDIDATE_URL": self.candidate, "LIVE_URL": self.live, "CANDIDATE_VERSION": self.version,
                "LIVE_VERSION": self.live_version, "BLUEGREEN_RELEASE": str(self.release),
                "BLUEGREEN_CHECK_POINT": self.point}


@dataclass
class CheckResult:
    """One check's outcome, as the step's record, the events and the dashboard show it."""

    name: str
    kind: str  # web | job | approval
    ok: bool
    detail: str  # one line for the operator: what was asked and what came back
    seconds: float
    timed_out: bool = False
    status: int | None = None  # web: the answer's status
    value: Any = None  # web: what the pointer found
    exit_code: int | None = None  # job
    output: str = ""  # job: the last lines of its output
    by: str = ""  # approval: who approved or rejected
    rejected: bool = False  # approval: rejected by a person (not timed out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        return f"check {self.name} ({self.kind}) {verdict} in {self.seconds:.2f}s: {self.detail}"


# -- web --------------------------------------------------------------------------------------------
def web(check: Any, targets: Targets) -> CheckResult:
    """``check.method`` ``check.url``: passes when the status is one of ``check.status`` and the value at
    ``check.pointer`` (if any) meets ``equals``/``min``/``max``; fails past ``check.timeout`` seconds."""
    import httpx

    url = targets.fill(check.url)
    shown = f"{check.method} {redact_url(url)}"
    headers = {PROBE_HEADER: "check", **{k: targets.fill(v) for k, v in check.headers.items()}}
    body = targets.fill(check.body).encode() if check.body else None
    began = time.monotonic()
    client = httpx.Client(timeout=check.timeout, follow_redirects=False)
    got: dict[str, Any] = {}

    def call() -> None:
        # In a thread of its own: a server that trickles its answer byte by byte never trips httpx's
        # per-read timeout, but the caller stops waiting at the deadline all the same.
        try:
            with client.stream(check.method, url, headers=headers, content=body) as response:
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_BODY:
                        got["error"] = f"its answer is larger than {MAX_BODY // 1024} KiB"
                        return
                got["answer"] = (response.status_code, data)
        except httpx.TimeoutException:
            got["timed_out"] = True  # httpx's own timeout, a moment before the caller's: the same verdict
        except httpx.HTTPError as exc:
            got["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # an invalid URL or header after filling in: the check fails, saying why
            got["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=call, name=f"check-{check.name}", daemon=True)
    worker.start()
    worker.join(check.timeout)
    seconds = round(time.monotonic() - began, 3)
    if worker.is_alive() or got.get("timed_out"):
        with contextlib.suppress(Exception):  # closing under a reader: whatever it raises, the check failed
            client.close()  # frees the connection; the thread ends with it
        return CheckResult(check.name, "web", False, f"{shown} did not answer within {check.timeout:g}s",
                           seconds, timed_out=True)
    client.close()
    if "error" in got:
        return CheckResult(check.name, "web", False, f"{shown} failed: {got['error']}", seconds)
    status, data = got["answer"]
    if status not in check.status:
        allowed = " or ".join(str(s) for s in check.status)
        return CheckResult(check.name, "web", False, f"{shown} answered {status}, not {allowed}: {clip(data)}",
                           seconds, status=status)
    if check.pointer is None:
        return CheckResult(check.name, "web", True, f"{shown} answered {status}", seconds, status=status)
    try:
        value = pointer(json.loads(data), check.pointer, "check")
    except ValueError:
        return CheckResult(check.name, "web", False, f"{shown} answered {status} but not JSON, so pointer "
                           f"{check.pointer!r} finds nothing: {clip(data)}", seconds, status=status)
    except ContractMismatch as exc:
        return CheckResult(check.name, "web", False, f"{shown} answered {status}: {exc}", seconds, status=status)
    problem = condition_problem(value, check.equals, check.min, check.max)
    where = check.pointer or "the answer"
    if problem:
        return CheckResult(check.name, "web", False, f"{shown} answered {status}; {where} is {value!r}, {problem}",
                           seconds, status=status, value=value)
    return CheckResult(check.name, "web", True, f"{shown} answered {status}; {where} is {value!r}", seconds,
                       status=status, value=value)


def condition_problem(value: Any, equals: Any, low: float | None, high: float | None) -> str:
    """Why ``value`` fails the condition ("" when it passes). Types count: true is not 1, "1" is not 1."""
    if equals is not None:
        return "" if _same(value, equals) else f"not {equals!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not a number"
    if low is not None and value < low:
        return f"below the minimum {low:g}"
    if high is not None and value > high:
        return f"above the maximum {high:g}"
    return ""


def _same(value: Any, expected: Any) -> bool:
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    if isinstance(value, int | float) and isinstance(expected, int | float):
        return value == expected  # 1 and 1.0 are the same number
    return type(value) is type(expected) and bool(value == expected)


# -- job --------------------------------------------------------------------------------------------
def job(check: Any, targets: Targets, engine: DockerRuntime, image: str) -> CheckResult:
    """A one-off container of ``image`` (``check.image`` or the candidate's) with ``check.command``, run to
    completion on the colours' engine: passes on exit code 0; killed and removed past ``check.timeout``."""
    env = {**targets.env(), **{k: targets.fill(v) for k, v in check.env.items()}}
    command = [targets.fill(part) for part in check.command] or None
    began = time.monotonic()
    try:
        run = engine.run_job(image, command, env, check.timeout, kind="check", tail=OUTPUT_LINES)
    except BluegreenError as exc:
        return CheckResult(check.name, "job", False, f"{image} did not run: {exc.message}",
                           round(time.monotonic() - began, 3))
    output = _tail(run.output)
    last = output.strip().splitlines()[-1] if output.strip() else ""
    said = f"; last line: {clip(last)}" if last else ""
    if run.exit_code is None:
        return CheckResult(check.name, "job", False, f"{image} still ran after {check.timeout:g}s: killed and "
                           f"removed{said}", run.seconds, timed_out=True, output=output)
    return CheckResult(check.name, "job", run.exit_code == 0, f"{image} exited with {run.exit_code}{said}",
                       run.seconds, exit_code=run.exit_code, output=output)


def _tail(output: str) -> str:
    lines = output.splitlines()[-OUTPUT_LINES:]
    text = "\n".join(lines)
    return text if len(text) <= OUTPUT_CHARS else "…" + text[-OUTPUT_CHARS:]


# -- approval ---------------------------------------------------------------------------------------
def approval(check: Any, answer: Answer, poll: float = 0.1) -> CheckResult:
    """Wait up to ``check.timeout`` seconds for ``answer()`` to say approve or reject; then ``on_timeout``:
    "proceed" passes the check, "rollback" fails it."""
    began = time.monotonic()
    deadline = began + check.timeout
    while True:
        got = answer()
        if got is not None:
            verdict, who = got
            seconds = round(time.monotonic() - began, 3)
            if verdict == "approve":
                return CheckResult(check.name, "approval", True, f"approved by {who}", seconds, by=who)
            return CheckResult(check.name, "approval", False, f"rejected by {who}", seconds, by=who,
                               rejected=True)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(poll, left))
    seconds = round(time.monotonic() - began, 3)
    if check.on_timeout == "proceed":
        return CheckResult(check.name, "approval", True, f"nobody answered within {check.timeout:g}s; "
                           "proceeding (on_timeout = \"proceed\")", seconds, timed_out=True)
    return CheckResult(check.name, "approval", False, f"nobody approved within {check.timeout:g}s "
                       "(on_timeout = \"rollback\")", seconds, timed_out=True)


# -- for the plan -----------------------------------------------------------------------------------
def describe(check: Any) -> str:
    """What the check does, in one line, for --dry-run (placeholders as written)."""
    if check.kind == "web":
        passes = " or ".join(str(s) for s in check.status)
        if check.pointer is not None:
            if check.equals is not None:
                passes += f" and {check.pointer or 'the answer'} = {check.equals!r}"
            else:
                bounds = [f">= {check.min:g}" if check.min is not None else "",
                          f"<= {check.max:g}" if check.max is not None else ""]
                passes += f" and {check.pointer or 'the answer'} " + " and ".join(b for b in bounds if b)
        return f"{check.method} {redact_url(check.url)}, passes on {passes}"
    if check.kind == "job":
        image = check.image or "the candidate's image"
        command = " ".join(check.command) if check.command else "its own command"
        return f"run {image}: {command}, passes on exit code 0"
    return ("wait for bluegreen promote (or the API, or the dashboard's Approve); bluegreen abort rejects; "
            f"no answer: {check.on_timeout}")
