"""A one-shot HTTP/1.0 GET over TCP or a unix socket: sockets only, no HTTP library.

``status`` and ``rollback`` run as new processes and must start fast. Importing ``http.client``
pulls in the ``email`` package (about 40 ms); a health probe or an engine inspect is one GET,
and HTTP/1.0 makes its answer end with the connection (no chunked bodies, no keep-alive).
"""

from __future__ import annotations

import socket


class HTTPFailure(OSError):
    """No well-formed answer: the connection failed, timed out, or the reply was not HTTP."""


def get(path: str, *, host: str = "127.0.0.1", port: int = 80, unix_socket: str | None = None,
        timeout: float = 5.0, limit: int = 16 << 20) -> tuple[int, bytes]:
    """GET ``path``: the status code and the body."""
    family = socket.AF_UNIX if unix_socket else socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(unix_socket if unix_socket else (host, port))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode())
            chunks, size = [], 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise HTTPFailure(f"answer larger than {limit} bytes")
    except HTTPFailure:
        raise
    except OSError as exc:
        raise HTTPFailure(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split()
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise HTTPFailure(f"not an HTTP answer: {head[:80]!r}")
    return int(parts[1]), body
