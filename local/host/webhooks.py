"""The host's HTTP surface: `/api/<route>` for HTTP triggers, and the Event Grid webhook.

`POST /runtime/webhooks/EventGrid?functionName=<fn>` takes a JSON array in the Event Grid schema,
answers the subscription-validation handshake, and runs the blob trigger for each
`Microsoft.Storage.BlobCreated` event. Azure's host serves Event-Grid-sourced blob triggers at
`/runtime/webhooks/blobs?functionName=Host.Functions.<fn>`; both paths and both name forms are
accepted, so a subscription written for Azure works here unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
from azure.storage.blob import BlobClient

from local.host.functions import EventGridBlobFunction, FunctionIndex, local_connection_string
from pipeline.settings import Settings

log = logging.getLogger("darkroom.host.http")
MAX_BODY = 10 * 1024 * 1024
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
WEBHOOK_PATHS = ("/runtime/webhooks/eventgrid", "/runtime/webhooks/blobs")


def parse_subject(subject: str) -> tuple[str, str]:
    """`/blobServices/default/containers/<c>/blobs/<name>` → (container, name)."""
    prefix = "/blobServices/default/containers/"
    if not subject.startswith(prefix) or "/blobs/" not in subject:
        raise ValueError(f"not a blob subject: {subject!r}")
    container, name = subject[len(prefix) :].split("/blobs/", 1)
    return container, name


def deliver_events(fn: EventGridBlobFunction, events: list, settings: Settings) -> dict | None:
    """Run the blob trigger for each BlobCreated event; returns a validation answer if asked."""
    for event in events:
        kind = event.get("eventType")
        if kind == VALIDATION:
            return {"validationResponse": event["data"]["validationCode"]}
        if kind != BLOB_CREATED:
            continue
        container, name = parse_subject(event["subject"])
        if container != fn.container:
            continue
        client = BlobClient.from_connection_string(
            local_connection_string(settings, fn.connection), container, name
        )
        fn.call(**{fn.arg_name: client})
    return None


class _Handler(BaseHTTPRequestHandler):
    index: FunctionIndex
    settings: Settings
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reply(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b'{"error":"body too large"}')
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        if body is None:
            return
        try:
            if url.path.rstrip("/").lower() in WEBHOOK_PATHS:
                self._event_grid(parse_qs(url.query), body)
            elif url.path.startswith("/api/"):
                self._http_function(url.path[len("/api/") :].strip("/"), url.query, body)
            else:
                self._reply(HTTPStatus.NOT_FOUND, b'{"error":"no such route"}')
        except Exception as exc:
            log.exception("request %s failed", self.path)
            self._reply(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode(),
            )

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def _event_grid(self, query: dict, body: bytes) -> None:
        name = (query.get("functionName") or [""])[0].removeprefix("Host.Functions.")
        fn = self.index.event_grid.get(name)
        if self.command != "POST" or fn is None:
            self._reply(HTTPStatus.NOT_FOUND, b'{"error":"unknown Event Grid function"}')
            return
        events = json.loads(body or b"[]")
        answer = deliver_events(fn, events if isinstance(events, list) else [events], self.settings)
        self._reply(HTTPStatus.OK, json.dumps(answer or {}).encode())

    def _http_function(self, route: str, query: str, body: bytes) -> None:
        fn = self.index.http.get(route)
        if fn is None or (fn.methods and self.command not in fn.methods):
            self._reply(HTTPStatus.NOT_FOUND, b'{"error":"no such function"}')
            return
        request = func.HttpRequest(
            self.command,
            f"http://{self.headers.get('Host', 'localhost')}{self.path}",
            headers=dict(self.headers),
            params={k: v[0] for k, v in parse_qs(query).items()},
            route_params={},
            body=body,
        )
        response = fn.call(**{fn.arg_name: request})
        self._reply(
            response.status_code,
            response.get_body(),
            response.mimetype or "text/plain",
            dict(response.headers),
        )


def start_server(index: FunctionIndex, settings: Settings, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"index": index, "settings": settings})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
