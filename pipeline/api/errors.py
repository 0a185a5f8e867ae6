"""The API's one error shape: `{"error": "short message"}`, never a stack trace."""

from __future__ import annotations

import json

from fastapi import HTTPException
from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in one short sentence.")


def api_error(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


def validation_message(errors: list) -> str:
    """The first of pydantic's validation errors as `field: what is wrong (got value)`, short:
    "limit: Input should be greater than or equal to 1 (got -1)"."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body",)) or "request"
    message = f"{where}: {first.get('msg', 'invalid')}"
    value = first.get("input")
    if isinstance(value, bool | int | float | str) and first.get("type") != "missing":
        message += f" (got {json.dumps(value)[:40]})"
    return message[:200]


def too_many(message: str, retry_after: float) -> HTTPException:
    """429 with the whole seconds after which the same request can succeed."""
    return api_error(429, message, {"Retry-After": str(max(1, int(retry_after + 0.999)))})


# Documented on every route that can answer them (OpenAPI `responses`).
_TEXT = {
    400: "The request is malformed.",
    401: "No valid caller identity (x-api-key or Authorization: Bearer).",
    403: "The caller may not do this (admin key needed).",
    404: "No such image for this caller.",
    409: "Conflict with the image's current state.",
    413: "The body is over the size limit.",
    415: "Unsupported content type.",
    422: "The image was refused (not an image, too large…): the reason says why.",
    429: "Over a per-caller limit; retry after Retry-After seconds.",
    503: "A dependency is unavailable; retry.",
}


def responses(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorBody, "description": _TEXT[code]} for code in codes}
