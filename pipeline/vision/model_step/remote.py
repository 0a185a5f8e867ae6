"""Calling a model server as a production client does.

One `azure.core.PipelineClient` per source (azure-core is already the transport of every Azure
SDK here, and its policies give headers, Entra tokens and per-call timeouts without code of our
own). No retry policy of its own: a failed call goes back through the chain's backoff, so a
struggling server is not hit again by every worker at once.

- connection errors, timeouts, 429, 502, 503, 504 → `TryLater` (with the server's `Retry-After`);
- any other 4xx → `StepFailed` with the server's short message: the same request will fail the
  same way, so no retry storm;
- other 5xx → a plain error: transient, retried with backoff, `failed` after the last attempt.

While waiting for an answer the step gives its compute slot up (`network_wait`), so a slow
server never holds a core; `CONCURRENCY` bounds the calls in flight per source per process.
Keys travel in headers only and are never logged or written (see logsafe, and the tests).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from azure.core import PipelineClient
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest, HttpResponse

from pipeline.engine.compute_slots import network_wait
from pipeline.framework.step_api import StepFailed, TryLater

TRANSIENT_STATUSES = (429, 502, 503, 504)
USER_AGENT = "darkroom-model-step"


def _retry_after(response: HttpResponse) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None  # an HTTP date: the chain's own backoff is as good


def short_message(response: HttpResponse, limit: int = 300) -> str:
    """The server's own words, briefly: a JSON `error`/`message`/`detail`, else the text."""
    try:
        body: Any = response.json()
    except Exception:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "Message"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value)
            if value:
                return " ".join(str(value).split())[:limit]
    try:
        text = response.text()
    except Exception:
        text = ""
    return " ".join(text.split())[:limit] or response.reason or "no message"


class RemoteModel:
    """An HTTP client for one model source."""

    def __init__(
        self,
        base_url: str,
        timeout_ms: int,
        concurrency: int,
        headers: Mapping[str, str] | None = None,
        credential: Any = None,
        scope: str | None = None,
    ) -> None:
        policies: list[Any] = [
            HeadersPolicy(dict(headers or {})),
            UserAgentPolicy(base_user_agent=USER_AGENT),
        ]
        if credential is not None and scope:
            policies.append(BearerTokenCredentialPolicy(credential, scope))
        self.base_url = base_url.rstrip("/")
        self.client = PipelineClient(base_url=self.base_url, policies=policies)
        self.timeout = timeout_ms / 1000
        self._slots = threading.BoundedSemaphore(concurrency)

    def call(self, request: HttpRequest, what: str, accept: tuple[int, ...] = ()) -> HttpResponse:
        """Send `request`, whose URL is a path under the base (empty: the base itself); the
        answer if it is a 2xx or in `accept` (statuses whose body the caller reads itself),
        else the classified error (see above)."""
        request.url = self.base_url + request.url
        with network_wait(), self._slots:
            try:
                response = self.client.send_request(
                    request, connection_timeout=self.timeout, read_timeout=self.timeout
                )
                response.read()
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise TryLater(f"{what}: the model server did not answer: {_short(exc)}") from exc
        status = response.status_code
        if 200 <= status < 300 or status in accept:
            return response
        message = short_message(response)
        if status in TRANSIENT_STATUSES:
            raise TryLater(
                f"{what}: the model server is busy ({status}): {message}", _retry_after(response)
            )
        if 400 <= status < 500:
            raise StepFailed(f"{what}: the model server refused the request ({status}): {message}")
        raise RuntimeError(f"{what}: the model server failed ({status}): {message}")

    def json(self, request: HttpRequest, what: str) -> Any:
        response = self.call(request, what)
        try:
            return response.json()
        except ValueError as exc:
            raise StepFailed(
                f"{what}: the model server answered something that is not JSON"
            ) from exc


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def keyless_over_plain_http(endpoint: str | None, key: str | None, setting: str) -> str | None:
    """Why an endpoint cannot work without a key, if it cannot: the identity's Entra tokens
    travel over TLS only (azure-core refuses to send one over http://)."""
    if endpoint and not key and not endpoint.lower().startswith("https://"):
        return (
            f"{setting} must be https:// when the app's identity signs in (Entra tokens travel "
            f"over TLS only); or set {setting.replace('_ENDPOINT', '_KEY')}"
        )
    return None


def azure_ai_service(
    endpoint: str,
    timeout: float,
    key: str | None,
    key_header: str = "Ocp-Apim-Subscription-Key",
    concurrency: int = 8,
) -> RemoteModel:
    """A client for an Azure AI service (Document Intelligence, Face, Azure OpenAI): its key in
    `key_header` when one is set, else an Entra token for the app's identity (the managed
    identity on Azure, which needs the service's data role)."""
    if key:
        return RemoteModel(endpoint, int(timeout * 1000), concurrency, headers={key_header: key})
    from pipeline.stores.azure_clients import default_credential

    return RemoteModel(
        endpoint,
        int(timeout * 1000),
        concurrency,
        credential=default_credential(),
        scope=COGNITIVE_SERVICES_SCOPE,
    )


def openai_path(api_version: str, deployment: str, operation: str) -> tuple[str, dict]:
    """The URL path of an Azure OpenAI `operation` (chat/completions, embeddings) and what the
    body must add: the v1 API names the deployment in `model`; a dated api-version in the path."""
    if api_version == "v1":
        return f"/openai/v1/{operation}", {"model": deployment}
    return f"/openai/deployments/{deployment}/{operation}?api-version={api_version}", {}
