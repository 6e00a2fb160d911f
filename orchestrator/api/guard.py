"""The door in front of the API and the dashboard: who is asking, then how much they send.

A pure ASGI middleware, so it acts before the framework reads anything of the body:

1. The ``gate`` looks at the request line and headers only (token, session cookie) and may refuse;
   a refusal is the gate's fixed answer and says nothing about what a body should hold.
2. A body announced (``Content-Length``) over ``max_body`` is refused with 413 before it is read.
3. Any other body is read here, counting bytes as they arrive: past ``max_body`` it is refused with
   413 at once, never read further; within the limit it is handed to the application whole. So no
   route, whether it reads its body or not, can be sent more than ``max_body``.

A refusal sent before the whole body arrived closes the connection (``Connection: close``): the
server stops reading, rather than reading and discarding the rest to keep the connection alive.
A client that sent ``Expect: 100-continue`` is refused before it sends any of the body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Refusal:
    """An answer sent instead of the application's."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def detail(cls, status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> Refusal:
        """A JSON answer ``{"detail": ...}``, shaped like the framework's own errors."""
        return cls(status, json.dumps({"detail": detail}).encode(), "application/json", headers)


Gate = Callable[[HTTPConnection], Refusal | None]


def too_large(limit: int) -> Refusal:
    return Refusal.detail(413, f"the request body is larger than {limit} bytes (serve.max_body)")


class Guard:
    """``gate`` first, then the body limit, for every HTTP request to ``app``."""

    def __init__(self, app: ASGIApp, gate: Gate, max_body: int) -> None:
        self.app = app
        self.gate = gate
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _announced(scope)
        has_body = chunked or bool(length)
        refusal = self.gate(HTTPConnection(scope))
        if refusal is not None:
            await _answer(send, refusal, close=has_body)
            return
        if not has_body:
            await self.app(scope, receive, send)  # nothing to read: the request passes as it came
            return
        if length is not None and length > self.max_body:
            await _answer(send, too_large(self.max_body), close=True)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(send, too_large(self.max_body), close=True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        handed = False

        async def replay() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _announced(scope: Scope) -> tuple[int | None, bool]:
    """The body's announced length (None when not given) and whether it comes in chunks."""
    length: int | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None  # the server refuses a malformed length before the request gets here
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


async def _answer(send: Send, refusal: Refusal, close: bool) -> None:
    headers = [(b"content-type", refusal.content_type.encode()),
               (b"content-length", str(len(refusal.body)).encode()),
               *((k.lower().encode(), v.encode()) for k, v in refusal.headers)]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": refusal.body, "more_body": False})
