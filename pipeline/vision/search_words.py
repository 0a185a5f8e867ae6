"""The words an image can be found by (`GET /api/images?q=`): one text per document.

Cosmos DB's full-text index covers one path per `FullTextScore`, so the document carries what
its search ranks on in one place, `search.text`: each capability's words (it declares them:
a caption, tag and object names, the text read in the photo) and each model step's label and
object names. Written with the document (pipeline.stores.results.render), so an image is
findable by what it shows as soon as the step that saw it has run, and a reprocess refreshes it.
People's names are not in it: they change with every merge and rename, and the `person` filter
already answers "photos of Ada".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.vision.capabilities import capabilities
from pipeline.vision.cloud.openai_embedding import text_embedder
from pipeline.vision.settings import AnalysisSettings

# Phrases are joined by a full stop, so a phrase search never matches across two of them; the
# whole is capped (a page of OCR text can be long; the index gains nothing from more).
SEPARATOR = ". "
MAX_CHARS = 8000


def _model_step_words(value: Any) -> list[str]:
    """A model step's result (`{model, config, labels | objects, …}`, pipeline.vision.
    model_step.step): its label and object names."""
    if not (isinstance(value, Mapping) and "model" in value and "config" in value):
        return []
    found = [*(value.get("labels") or []), *(value.get("objects") or [])]
    return sorted(
        {str(item["name"]) for item in found if isinstance(item, Mapping) and item.get("name")}
    )


def search_text(analysis: Mapping[str, Any], fields: Mapping[str, Any]) -> str:
    """The document's `search.text`: capabilities' words in their rank order, then the model
    steps' (other top-level `fields`) in name order."""
    phrases: list[str] = []
    for name, capability in capabilities().items():
        if analysis.get(name) is not None:
            phrases.extend(capability.words(analysis[name]))
    for name in sorted(fields):
        phrases.extend(_model_step_words(fields[name]))
    flat = [" ".join(p.split()) for p in phrases]
    return SEPARATOR.join(p for p in flat if p)[:MAX_CHARS]


def search_vector(config: AnalysisSettings, analysis: Mapping[str, Any]) -> list[float] | None:
    """The caption's meaning as a vector (`search.vector`), when a text-embedding deployment
    is configured and the image has a caption; else None (search then ranks by words)."""
    embedder = text_embedder(config.openai)
    caption = (analysis.get("caption") or {}).get("text")
    if not (embedder.configured and caption):
        return None
    return embedder.embed(caption)
