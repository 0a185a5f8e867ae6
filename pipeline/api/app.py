"""The FastAPI application: routers, the one error shape, the page, the OpenAPI 3.1 document.

Run by the Functions host through `azure.functions.AsgiMiddleware` (function_app.py), and by
the local host the same way. Errors are always `{"error": "…"}`: FastAPI's 422 validation
answers become 400s with the first problem in a few words, and an unexpected exception is a
500 "internal error" with the trace in the log only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import azure.functions as func
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from pipeline.api import capabilities, images, ops, people
from pipeline.api.auth import Caller
from pipeline.api.deps import CallerDep, services
from pipeline.api.errors import responses, validation_message
from pipeline.api.head_limit import HeadLimit
from pipeline.settings import SettingsError, get_settings

log = logging.getLogger("darkroom.api")
PAGE = Path(__file__).parent / "page"
PAGE_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
}

app = FastAPI(
    title="Darkroom",
    version="1.0.0",
    summary="Upload images, analyse them, read the results.",
    description=(
        "Every route but /api/health and this document needs a caller identity: an API key in "
        "`x-api-key`, or a Microsoft Entra ID access token as `Authorization: Bearer …`. "
        'Errors are `{"error": "…"}`.'
    ),
    openapi_url="/api/openapi.json",
    docs_url=None,
    redoc_url=None,
)
app.include_router(images.router)
app.include_router(ops.router)
app.include_router(people.router)
app.include_router(capabilities.router)


def _cors_origins() -> tuple[str, ...]:
    """Origins of browser apps elsewhere that may call the API. On Azure the platform's CORS
    (Bicep sets the same origins) answers first; the local host has only this."""
    try:
        return get_settings().api.cors_origins
    except SettingsError:
        return ()  # reported by health; the app must still index


if _cors_origins():
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(_cors_origins()),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["x-api-key", "authorization", "content-type", "if-none-match"],
        expose_headers=["etag", "retry-after"],
        max_age=3600,
    )


# Added last, so it runs first: an oversized head is refused before CORS or any route.
app.add_middleware(HeadLimit)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 304:
        return Response(status_code=304, headers=exc.headers)
    messages = {404: "no such route", 405: "method not allowed"}
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else None
    message = detail if detail and detail not in ("Not Found", "Method Not Allowed") else None
    body = {"error": message or messages.get(exc.status_code, "request refused")}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    return JSONResponse({"error": validation_message(exc.errors())}, 400)


@app.exception_handler(Exception)
async def _crash(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error"}, status_code=500)


@app.get("/api/me", response_model=Caller, responses=responses(401, 429), summary="Who am I")
def me(caller: CallerDep) -> Caller:
    return caller


def _content_security_policy() -> str:
    """The page talks to this origin and to blob storage (uploads, read links), nothing else."""
    storage = services().azure.blob_service.url
    parts = urlsplit(storage)
    origin = f"{parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'self'; img-src 'self' blob: data: {origin}; connect-src 'self' {origin}; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    )


@app.get("/{file}", include_in_schema=False)
@app.get("/", include_in_schema=False)
def page(file: str = "") -> Response:
    if file not in PAGE_FILES:
        return JSONResponse({"error": "no such route"}, status_code=404)
    name, media_type = PAGE_FILES[file]
    return Response(
        (PAGE / name).read_bytes(),
        media_type=media_type,
        headers={
            "Content-Security-Policy": _content_security_policy(),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


asgi = func.AsgiMiddleware(app)
