"""The meaning of a caption, and of a search, as a vector: an Azure OpenAI text-embedding
deployment (`DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT`, e.g. text-embedding-3-small).

With one configured, the analyze step stores the caption's vector in the document
(`search.vector`) and `GET /api/images?q=` ranks by Reciprocal Rank Fusion of the words (BM25)
and the distance between the query's vector and the caption's, so "puppy" finds the photo
captioned "a dog on a beach". Without one, search ranks by words alone.

`POST {endpoint}/openai/v1/embeddings` with `{"model": deployment, "input": [text],
"dimensions": n}`, or the dated `/openai/deployments/{deployment}/embeddings?api-version=…`.
text-embedding-3 models shorten their vectors to `n`; the images container's vector policy has
the same `n`. The same client, auth and error handling as the vision calls
(pipeline.vision.model_step.remote).
"""

from __future__ import annotations

import threading

from azure.core.rest import HttpRequest

from pipeline.framework.step_api import StepFailed
from pipeline.vision.model_step.remote import RemoteModel, azure_ai_service, openai_path
from pipeline.vision.settings import OpenAISettings

MAX_INPUT_CHARS = 2000  # a caption is one sentence; a search box 200 characters


def azure_openai_client(settings: OpenAISettings) -> RemoteModel:
    """The HTTP client of an Azure OpenAI resource: `api-key` when a key is set, else the
    app's identity (Cognitive Services OpenAI User). The vision calls use it too."""
    return azure_ai_service(
        settings.endpoint or "", settings.timeout, settings.key, key_header="api-key"
    )


class TextEmbedder:
    def __init__(self, settings: OpenAISettings) -> None:
        self.settings = settings
        self._remote: RemoteModel | None = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.settings.endpoint and self.settings.embedding_deployment)

    def _client(self) -> RemoteModel:
        with self._lock:
            if self._remote is None:
                self._remote = azure_openai_client(self.settings)
            return self._remote

    def embed(self, text: str) -> list[float]:
        """The vector of `text`, of `embedding_dimensions` numbers. Raises TryLater when the
        service is busy or away, StepFailed when it refuses."""
        path, named = openai_path(
            self.settings.api_version, self.settings.embedding_deployment or "", "embeddings"
        )
        body = {
            "input": [" ".join(text.split())[:MAX_INPUT_CHARS]],
            "dimensions": self.settings.embedding_dimensions,
            **named,
        }
        answer = self._client().json(HttpRequest("POST", path, json=body), "Azure OpenAI")
        try:
            vector = [float(x) for x in answer["data"][0]["embedding"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise StepFailed("Azure OpenAI answered embeddings without a vector") from None
        if len(vector) != self.settings.embedding_dimensions:
            raise StepFailed(
                f"the embedding deployment answered {len(vector)} numbers, not "
                f"DARKROOM_OPENAI_EMBEDDING_DIMENSIONS={self.settings.embedding_dimensions}"
            )
        return vector


_shared: dict[OpenAISettings, TextEmbedder] = {}
_shared_lock = threading.Lock()


def text_embedder(settings: OpenAISettings) -> TextEmbedder:
    """The process's embedder for these settings (one HTTP client, reused)."""
    with _shared_lock:
        if settings not in _shared:
            _shared[settings] = TextEmbedder(settings)
        return _shared[settings]
