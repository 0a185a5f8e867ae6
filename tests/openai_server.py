"""A loopback Azure OpenAI server speaking the chat-completions protocol, for tests.

`POST /openai/v1/chat/completions` (the deployment in `model`; or, with a dated `api_version`,
`/openai/deployments/{deployment}/chat/completions?api-version=…`) with a user message
holding the image as a data URL and a strict `json_schema` response format: the server checks
the request as the service would (auth header, api-version, the schema's shape), decodes the
image, and answers the JSON that `describe(image)` returns, wrapped in a chat.completion shaped
exactly as Azure documents it (choices with message/finish_reason/content_filter_results,
prompt_filter_results, usage). `POST …/embeddings` for `embedding_deployment` answers
`embed(text)` shortened to the requested `dimensions`, as text-embedding-3 does. `script`
queues raw answers (status, headers, body) for the next calls: a 429 with Retry-After, a
content-filter 400, a filtered finish, a slow answer.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from PIL import Image

MODEL = "gpt-4.1-mini-2025-04-14"
SAFE = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}


def completion(parts: dict, prompt_tokens: int = 1105, completion_tokens: int = 96) -> dict:
    """A chat.completion as Azure OpenAI answers one with structured output."""
    return {
        "id": "chatcmpl-Ab12Cd34Ef56",
        "object": "chat.completion",
        "created": 1764921600,
        "model": MODEL,
        "system_fingerprint": "fp_7a58f7fb1b",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": SAFE}],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {
                    "role": "assistant",
                    "content": json.dumps(parts),
                    "refusal": None,
                },
                "content_filter_results": SAFE,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


PROMPT_FILTERED = {
    "error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
        "content management policy. Please modify your prompt and retry.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": {"filtered": False, "severity": "safe"},
                "self_harm": {"filtered": False, "severity": "safe"},
                "sexual": {"filtered": True, "severity": "high"},
                "violence": {"filtered": False, "severity": "safe"},
            },
        },
    }
}

RATE_LIMITED = {
    "error": {
        "code": "429",
        "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
        "version 2024-10-21 have exceeded token rate limit of your current AIServices S0 "
        "pricing tier. Please retry after 7 seconds.",
    }
}


def answer_filtered() -> dict:
    """200 with the completion withheld by the output filter."""
    body = completion({})
    choice = body["choices"][0]
    choice["finish_reason"] = "content_filter"
    choice["message"] = {"role": "assistant", "content": None, "refusal": None}
    choice["content_filter_results"] = {
        **SAFE,
        "violence": {"filtered": True, "severity": "medium"},
    }
    return body


class OpenAIServer:
    def __init__(
        self,
        describe: Callable[[Image.Image], dict],
        deployment: str = "vision",
        key: str | None = None,
        api_version: str = "v1",
        embed: Callable[[str], list[float]] | None = None,
        embedding_deployment: str = "embeddings",
    ) -> None:
        self.describe, self.deployment, self.key = describe, deployment, key
        self.embed, self.embedding_deployment = embed, embedding_deployment
        self.api_version = api_version
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, dict, Any, float]] = []  # status, headers, body, delay
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: Any, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, body = owner.handle(self.path, dict(self.headers), raw)
                self._send(status, body, headers)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict, Any]:
        url = urlparse(path)
        body = json.loads(raw)
        if self.api_version == "v1":  # the deployment is named in the body
            deployment = body.get("model")
            operation = url.path.removeprefix("/openai/v1/")
            dated = url.path.startswith("/openai/v1/") and not url.query
        else:
            prefix, _, rest = url.path.partition("/openai/deployments/")
            deployment, _, operation = rest.partition("/")
            dated = not prefix and parse_qs(url.query).get("api-version") == [self.api_version]
        known = {
            ("chat/completions", self.deployment),
            *((("embeddings", self.embedding_deployment),) if self.embed else ()),
        }
        if not dated:
            return 404, {}, {"error": {"code": "404", "message": "Resource not found"}}
        if (operation, deployment) not in known:
            return 404, {}, {"error": {"code": "DeploymentNotFound", "message": "no deployment"}}
        if self.key is not None and headers.get("api-key") != self.key:
            return 401, {}, {"error": {"code": "401", "message": "Access denied: invalid key"}}
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
            scripted = self.script.pop(0) if self.script else None
        if scripted:
            status, extra, answer, delay = scripted
            time.sleep(delay)
            return status, extra, answer
        if operation == "embeddings":
            return 200, {}, self._embeddings(body)
        image = self._image(body)
        schema = body["response_format"]["json_schema"]["schema"]
        parts = self.describe(image)
        return 200, {}, completion({k: parts[k] for k in schema["required"]})

    def _embeddings(self, body: dict) -> dict:
        """An embeddings list as Azure OpenAI answers one (text-embedding-3-small)."""
        assert self.embed is not None
        texts = body["input"]
        data = []
        for index, text in enumerate(texts):
            vector = self.embed(text)
            size = body.get("dimensions", len(vector))
            vector = (vector + [0.0] * size)[:size]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @staticmethod
    def _image(body: dict) -> Image.Image:
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["strict"] is True
        user = next(m for m in body["messages"] if m["role"] == "user")
        url = next(p for p in user["content"] if p["type"] == "image_url")["image_url"]["url"]
        prefix = "data:image/jpeg;base64,"
        assert url.startswith(prefix)
        return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))

    def __enter__(self) -> OpenAIServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
