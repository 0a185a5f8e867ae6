"""The host's HTTP server: uvicorn + Starlette, with the limits a server on a port needs.

Why these: uvicorn (h11) parses HTTP strictly — a negative, non-numeric or doubled
`Content-Length` is a 400 before any byte of body is read — and it is the most used ASGI
server, so it will carry the public API too. Starlette routes `/api/...` from the app's
`@app.route` templates (route parameters included), and each call is made with
`azure.functions.HttpRequest` and answered from `HttpResponse`, exactly as Azure calls them.

What the libraries leave to us, and this module adds:
- a body cap (`MAX_BODY`, 413) checked against `Content-Length` first and counted while
  streaming (chunked bodies have no length);
- a deadline for the request head (`HEAD_SECONDS`): uvicorn's keep-alive timer is reset by every
  byte, so a client trickling a header would hold its connection for ever (encode/uvicorn#157);
- a deadline for the body (`BODY_SECONDS`, 408);
- a concurrency cap (`MAX_CONNECTIONS`, 503 beyond it);
- the request head limit (pipeline.api.head_limit, 414/431): h11 enforces its incomplete-event
  size only while a head is still arriving, so the same middleware as the app's checks whole
  heads, and h11's own refusals are answered in JSON too;
- the client's address from the socket only: uvicorn's forwarded-header handling (which
  believes X-Forwarded-For from 127.0.0.1) is off, and the peer is appended to X-Forwarded-For
  as Azure's front end does;
- short JSON errors: an exception's text or trace never reaches the client (it goes to the log).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import azure.functions as func
import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from local.host import keys
from local.host.functions import FunctionIndex, HttpFunction
from local.host.webhooks import BadEvents, TriggerQueue, read_events, trigger_queues
from pipeline.api.head_limit import MAX_HEAD_BYTES, HeadLimit, error_body
from pipeline.settings import Settings, read_host_json

log = logging.getLogger("darkroom.host.http")
MAX_BODY = 10 * 1024 * 1024  # 10,000 Event Grid events are ~7 MB; Event Grid batches ≤ 1 MB
HEAD_SECONDS = 10.0
BODY_SECONDS = 30.0
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 200
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
JSON_TYPES = re.compile(r"^application/([a-z0-9.+-]+\+)?json$")


class _HeadDeadlineH11(H11Protocol):
    """h11 protocol that closes a connection whose request head is not complete in time.

    Armed when the connection opens and after every response (keep-alive); it fires harmlessly
    if a new request began meanwhile (`self.cycle` changed)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def _arm(self) -> None:
        self.loop.call_later(HEAD_SECONDS, self._head_deadline, self.cycle)

    def send_400_response(self, msg: str) -> None:
        """h11 refused the bytes: a JSON answer like every other refusal (uvicorn's own is
        text/plain), 431 when the head outgrew MAX_HEAD_BYTES before it was complete."""
        buffered, _ = self.conn.trailing_data
        if len(buffered) > MAX_HEAD_BYTES:
            status = 431
            message = f"request head (request line and headers) over {MAX_HEAD_BYTES:,} bytes"
        else:
            status, message = 400, "malformed HTTP request"
        body = error_body(message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=status, headers=headers), h11.Data(data=body)):
            self.transport.write(self.conn.send(event))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()

    def _head_deadline(self, cycle: object) -> None:
        if self.cycle is cycle and not self.transport.is_closing():
            log.info("closing %s: no request head in %ss", self.client, HEAD_SECONDS)
            self.transport.close()


def _error(status: int, message: str, close: bool = False) -> JSONResponse:
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, or HTTPException 413/408. The connection is closed after either: the rest of a
    too-large or stalled body must not be read (uvicorn would otherwise drain it)."""
    declared = request.headers.get("content-length")
    if declared is not None and int(declared) > limit:  # h11 checked it is digits only
        raise HTTPException(413, f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"body over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"body not received in {BODY_SECONDS:.0f}s") from None
    except ClientDisconnect:
        raise HTTPException(400, "client went away") from None
    return b"".join(chunks)


def route_prefix() -> str:
    """host.json's `extensions.http.routePrefix` ("api" when unset), as the host applies it."""
    http = (read_host_json().get("extensions") or {}).get("http") or {}
    return str(http.get("routePrefix", "api")).strip("/")


def azure_route(template: str, prefix: str = "api") -> str:
    """An Azure Functions route template as a Starlette path: `{id}`, `{id:int}` and the
    catch-all `{*rest}`; other constraints (`alpha`, `guid`, …) match any one segment here."""

    def one(match: re.Match) -> str:
        name, constraint = match.group(1), match.group(2)
        if name.startswith("*"):
            return "{" + name[1:] + ":path}"
        name = name.rstrip("?")
        return "{" + name + (":int" if constraint == "int" else "") + "}"

    path = re.sub(r"\{([*\w?]+)(?::(\w+)[^}]*)?\}", one, template.strip("/"))
    return "/" + "/".join(part for part in (prefix, path) if part)


def route_order(template: str) -> tuple[int, int]:
    """ASP.NET Core's precedence, roughly: literal routes before parameters, catch-alls last."""
    return ("{*" in template, template.count("{"))


def _http_endpoint(fn: HttpFunction) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        body = await read_body(request)
        headers = dict(request.headers)
        # As Azure's front end does: the peer's address appended to whatever the client sent
        # (the app believes only the entries DARKROOM_TRUSTED_PROXIES allows: see
        # pipeline.api.deps.client_address). The peer is the socket's: uvicorn's own
        # forwarded-header handling is off (HttpServer), or a client on this machine could
        # name any address it likes.
        peer = request.client.host if request.client else "unknown"
        headers["x-forwarded-for"] = ", ".join([*request.headers.getlist("x-forwarded-for"), peer])
        azure_request = func.HttpRequest(
            request.method,
            str(request.url),
            headers=headers,
            params=dict(request.query_params),
            route_params={k: str(v) for k, v in request.path_params.items()},
            body=body,
        )
        try:
            if inspect.iscoroutinefunction(fn.call):
                response = await fn.call(**{fn.arg_name: azure_request})
            else:
                response = await run_in_threadpool(fn.call, **{fn.arg_name: azure_request})
        except Exception:
            log.exception("function %s failed", fn.name)  # the trace is for the log only
            return _error(500, "internal error")
        if not isinstance(response, func.HttpResponse):
            log.error("function %s returned %s, not an HttpResponse", fn.name, type(response))
            return _error(500, "internal error")
        headers = dict(response.headers)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
        return Response(response.get_body(), status_code=response.status_code, headers=headers)

    return endpoint


def _webhook_endpoint(
    index: FunctionIndex, queues: dict[str, TriggerQueue], key: str
) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        # Key first, as Azure's host does: without it, nothing about the functions is told.
        given = request.query_params.get("code") or request.headers.get("x-functions-key")
        if not keys.key_matches(given, key):
            return _error(401, "missing or wrong code (the blobs_extension system key)", True)
        name = request.query_params.get("functionName", "").removeprefix("Host.Functions.")
        fn = index.event_grid.get(name)
        if fn is None:
            return _error(404, "unknown Event Grid function", True)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not JSON_TYPES.match(content_type):
            return _error(415, "content type must be application/json", True)
        body = await read_body(request)
        try:  # parsing 10,000 events takes ~0.1 s: not on the event loop
            accepted = await run_in_threadpool(read_events, body, fn.container)
        except BadEvents as exc:
            return _error(400, str(exc))
        if accepted.validation_code is not None:
            return JSONResponse({"validationResponse": accepted.validation_code})
        if accepted.blobs:
            try:
                await run_in_threadpool(queues[fn.name].send, accepted.blobs)
            except Exception as exc:  # Event Grid retries a 503: nothing is lost
                log.warning(
                    "queueing %d event(s) for %s failed: %s", len(accepted.blobs), fn.name, exc
                )
                return _error(503, "could not queue the events; retry")
            log.debug("accepted %d event(s) for %s", len(accepted.blobs), fn.name)
        return JSONResponse({})

    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "no such route", 405: "method not allowed"}
    detail = messages.get(exc.status_code) or str(exc.detail)
    response = _error(exc.status_code, detail, close=exc.status_code in (400, 408, 413))
    response.headers.update(exc.headers or {})  # e.g. Allow on a 405
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("request %s %r failed", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal error")


def build_app(index: FunctionIndex, settings: Settings) -> Starlette:
    key = keys.system_key(settings.data_dir)
    webhook = _webhook_endpoint(index, trigger_queues(index, settings), key)
    routes = [
        Route(path, webhook, methods=["POST"])
        # Azure's paths are case-insensitive; these are the spellings in use.
        for path in (
            "/runtime/webhooks/blobs",
            "/runtime/webhooks/EventGrid",
            "/runtime/webhooks/eventgrid",
        )
    ]
    prefix = route_prefix()
    for fn in sorted(index.http.values(), key=lambda f: route_order(f.route)):
        methods = list(fn.methods) or ALL_METHODS  # Azure: no methods listed means any
        routes.append(Route(azure_route(fn.route, prefix), _http_endpoint(fn), methods=methods))
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        middleware=[Middleware(HeadLimit)],  # the webhooks too, not only the app's routes
    )


class HttpServer:
    """uvicorn in a thread of the host process; the port is bound by the caller's thread, so a
    port in use fails `start_server` at once, as before."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        config = uvicorn.Config(
            app,
            http=_HeadDeadlineH11,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            limit_concurrency=MAX_CONNECTIONS,
            timeout_graceful_shutdown=10,
            server_header=False,
            # uvicorn believes X-Forwarded-For from 127.0.0.1 by default, and every client of
            # this host is on 127.0.0.1: the socket's peer is the only address it may trust.
            proxy_headers=False,
            # The request head is limited to what the app allows (pipeline.api.head_limit);
            # a longer head that is still arriving is refused here with the same JSON answer.
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        )
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self, timeout: float = 10) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start; see the log")
            time.sleep(0.02)

    def shutdown(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


def start_server(index: FunctionIndex, settings: Settings, port: int) -> HttpServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    server = HttpServer(build_app(index, settings), sock)
    server.start()
    return server
