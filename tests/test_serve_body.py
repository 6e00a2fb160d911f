"""`bluegreen serve` asks who is calling before it reads a body, and reads no body over serve.max_body.

A real serve process and real HTTP: each big body is made while it is sent, so a test sees how much
of it the client got to send before serve answered (a server that reads everything takes it all).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Project, free_ports
from tests.serving import TOKEN, Served, alertmanager_payload, start_serve, stop

BIG = 64 * 1024 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_TOKEN = {"detail": "missing or wrong bearer token"}
MODES = pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])


class Upload:
    """A body of ``total`` bytes, made as it is sent, counting how much of it the client got to send."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        block = b"x" * 65536
        while self.sent < self.total:
            piece = block[: self.total - self.sent]
            self.sent += len(piece)
            yield piece


def post_big(url: str, *, chunked: bool, headers: dict[str, str] | None = None,
             content_type: str = "application/json", total: int = BIG) -> tuple[httpx.Response, Upload]:
    upload = Upload(total)
    sent_headers = {"Content-Type": content_type, **(headers or {})}
    if not chunked:
        sent_headers["Content-Length"] = str(total)  # without it httpx sends the iterator in chunks
    answer = httpx.post(url, content=upload, headers=sent_headers, timeout=120)
    return answer, upload


def assert_not_read(upload: Upload) -> None:
    """Serve answered long before the body's end: what got sent is what the kernel buffers held."""
    assert upload.sent < upload.total // 2, f"the client sent {upload.sent} of {upload.total} bytes"


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def start_scratch(root: Path, env: dict[str, str] | None = None) -> Served:
    """serve in a fresh project with nothing deployed: what these tests check happens before any action."""
    proxy_port, blue, green, port = free_ports(4)
    project = Project(root=root, name=f"t{uuid.uuid4().hex[:10]}", proxy_port=proxy_port, blue_port=blue,
                      green_port=green, env={"BLUEGREEN_ACTOR": "tester"})
    project.write_config()
    proc, log = start_serve(project, port, env)
    return Served(project, f"http://127.0.0.1:{port}", proc, log)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Served]:
    served = start_scratch(tmp_path_factory.mktemp("serve-body"))
    yield served
    stop(served.proc)


@pytest.mark.parametrize("path", ["/api/rollback", "/api/alerts"])
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"], ids=["no-token", "wrong-token"])
@MODES
def test_a_huge_body_without_a_valid_token_is_refused_401_before_it_is_read(
        scratch: Served, path: str, token: str | None, chunked: bool) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer, upload = post_big(f"{scratch.url}{path}", chunked=chunked, headers=headers)
    assert answer.status_code == 401, answer.text[:300]
    assert answer.json() == NO_TOKEN  # the same words whatever was sent: nothing of the schema
    assert answer.headers["www-authenticate"] == "Bearer" and answer.headers["connection"] == "close"
    assert_not_read(upload)


def test_every_refusal_without_a_token_is_the_same_and_names_no_field(scratch: Served) -> None:
    """A malformed body, a body with unknown fields, or none: 401 with one fixed text, on every API route."""
    paths = scratch.call("GET", "/api/openapi.json").json()["paths"]
    routes = [(method.upper(), path) for path, ops in paths.items() for method in ops]
    assert ("POST", "/api/rollback") in routes and ("POST", "/api/alerts") in routes and len(routes) >= 11
    bodies = [b"{not json", json.dumps({"reasn": "x", "alerts": [{}]}).encode(), b""]
    for method, path in routes:
        for body in bodies:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
                answer = httpx.request(method, f"{scratch.url}{path}", content=body, timeout=10,
                                       headers={"Content-Type": "application/json", **headers})
                assert (answer.status_code, answer.json()) == (401, NO_TOKEN), (method, path, body, answer.text)
    in_url = httpx.post(f"{scratch.url}/api/rollback?token={TOKEN}", content=b"{not json", timeout=10,
                        headers={"Content-Type": "application/json"})
    assert in_url.status_code == 401 and "in the URL is refused" in in_url.json()["detail"]
    assert "loc" not in in_url.text
    # With the token, a malformed body is still answered with the field it gets wrong.
    typo = scratch.call("POST", "/api/rollback", json={"reasn": "x"})
    assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["body", "reasn"]


@pytest.mark.parametrize("path", ["/api/abort", "/api/alerts"])
@MODES
def test_with_the_token_a_body_over_the_limit_is_refused_413_as_it_arrives(
        scratch: Served, path: str, chunked: bool) -> None:
    """/api/abort never reads its body, /api/alerts does: neither is sent more than serve.max_body."""
    answer, upload = post_big(f"{scratch.url}{path}", chunked=chunked, headers=AUTH)
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json() == {"detail": "the request body is larger than 1048576 bytes (serve.max_body)"}
    assert answer.headers["connection"] == "close"
    assert_not_read(upload)
    assert scratch.call("GET", "/healthz").status_code == 200  # and serve carries on


@MODES
def test_an_alertmanager_payload_of_a_large_group_is_taken_under_the_default_limit(
        scratch: Served, chunked: bool) -> None:
    payload = alertmanager_payload(200)
    for alert in payload["alerts"]:  # as Alertmanager sends them: annotations and a link back
        alert["annotations"] = {"summary": "5xx above 5% for 5m", "description": "x" * 300}
        alert["generatorURL"] = "http://prometheus.example:9090/graph?g0.expr=" + "y" * 120
    body = json.dumps(payload).encode()
    assert 100_000 < len(body) < 1024 * 1024, len(body)
    answer = scratch.call("POST", "/api/alerts", content=chunks(body, 16384) if chunked else body,
                          headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text[:300]
    assert (answer.json()["received"], answer.json()["result"]) == (200, "recorded; no rule asks for an action")


def test_the_limit_is_the_setting_to_the_byte(tmp_path: Path, docker_client: Any) -> None:
    served = start_scratch(tmp_path, {"BLUEGREEN_SERVE__MAX_BODY": "4KiB"})
    try:
        payload = alertmanager_payload(1)
        payload["alerts"][0]["annotations"] = {"summary": ""}
        pad = 4096 - len(json.dumps(payload).encode())
        payload["alerts"][0]["annotations"]["summary"] = "s" * pad
        at_limit = json.dumps(payload).encode()
        assert len(at_limit) == 4096
        over = at_limit[:-1] + b" }"  # the same document, one byte longer
        assert len(over) == 4097 and json.loads(over) == payload

        def send(body: bytes, chunked: bool) -> httpx.Response:
            return served.call("POST", "/api/alerts", content=chunks(body) if chunked else body,
                               headers={"Content-Type": "application/json"})

        for chunked in (False, True):
            assert send(at_limit, chunked).status_code == 200, chunked
            refused = send(over, chunked)
            assert refused.status_code == 413, (chunked, refused.text[:300])
            assert "larger than 4096 bytes" in refused.json()["detail"]
    finally:
        stop(served.proc)


@MODES
def test_a_dashboard_form_without_a_session_is_refused_before_its_body_is_read(
        scratch: Served, chunked: bool) -> None:
    for path in ("/ui/rollback", "/ui/drill", "/logout"):
        answer, upload = post_big(f"{scratch.url}{path}", chunked=chunked,
                                  content_type="application/x-www-form-urlencoded")
        assert answer.status_code == 401 and "Sign in first." in answer.text, path
        assert_not_read(upload)


@MODES
def test_dashboard_forms_and_the_sign_in_form_take_no_body_over_the_limit(scratch: Served, chunked: bool) -> None:
    signed_in = httpx.post(f"{scratch.url}/login", data={"token": TOKEN}, timeout=10)
    assert signed_in.status_code == 303
    session = signed_in.cookies["bluegreen_session"]
    for path, headers in (("/login", {}), ("/ui/drill", {"Cookie": f"bluegreen_session={session}"})):
        answer, upload = post_big(f"{scratch.url}{path}", chunked=chunked, headers=headers,
                                  content_type="application/x-www-form-urlencoded")
        assert answer.status_code == 413, (path, answer.status_code, answer.text[:300])
        assert_not_read(upload)
