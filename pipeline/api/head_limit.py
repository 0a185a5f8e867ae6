"""The request head (request line + headers) is limited to `MAX_HEAD_BYTES`, in the app itself.

Why here and not only in a server: the app runs behind the Functions host on Azure and behind
the local host's uvicorn, and neither limit is ours to rely on — h11 checks its 16 KiB only
while a head is still arriving (a 100 KB head that arrives whole passed), and Azure's front end
and host have their own, larger limits. An ASGI middleware sees the same scope under both, so
the documented limit holds in both places with the API's one error shape. RFC 9110 names the
answers: 414 when the request line alone is too long (a huge query), 431 for the head as a
whole (RFC 6585).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HEAD_BYTES = 16 * 1024


def head_size(scope: Scope) -> tuple[int, int]:
    """(request line, whole head) in bytes, as the client sent them over HTTP/1.1."""
    target = len(scope.get("raw_path") or scope.get("path", "").encode())
    if query := scope.get("query_string"):
        target += 1 + len(query)
    line = len(scope.get("method", "GET")) + 1 + target + len(" HTTP/1.1\r\n")
    headers = sum(len(name) + 2 + len(value) + 2 for name, value in scope.get("headers", ()))
    return line, line + headers + 2


def over_limit(line: int, head: int) -> tuple[int, str] | None:
    """The status and message for a head of these sizes, or None when it is within the limit."""
    if line > MAX_HEAD_BYTES:
        return 414, f"request line over {MAX_HEAD_BYTES:,} bytes (the query is too long)"
    if head > MAX_HEAD_BYTES:
        return 431, f"request head (request line and headers) over {MAX_HEAD_BYTES:,} bytes"
    return None


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class HeadLimit:
    """Pure ASGI middleware: a head over the limit is answered before any route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = over_limit(*head_size(scope)) if scope["type"] == "http" else None
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, message = refused
        body = error_body(message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
