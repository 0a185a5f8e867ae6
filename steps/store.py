"""store: the final act of the chain — archive the result next to the image's derivatives.

The pipeline writes the document to Cosmos DB after every step and marks it `done` after the
last one; this step adds what a downstream consumer or an auditor wants beyond the database: one
self-contained JSON record per image in blob storage (cheap to keep, easy to bulk-export).
Notifications to downstream systems join this step in a later change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.framework.step_api import StepContext, StepManifest, StoredBlob


class StoreOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    archive: StoredBlob = Field(
        description="The result archive: one JSON record of the image's fields (GPS included)."
    )


def summarize(fields: Mapping[str, Any]) -> str | None:
    archive = fields.get("archive")
    return f"archived as {archive['container']}/{archive['name']}" if archive else None


manifest = StepManifest(
    name="store",
    version="1.0.0",
    description="Write the result archive (one JSON record per image) beside its derivatives.",
    reads=("image",),
    writes=("archive",),
    output=StoreOutput,
    summarize=summarize,
)


def run(ctx: StepContext) -> dict[str, Any]:
    record = {
        "id": ctx.image_id,
        "source": {
            "name": ctx.source_name,
            "size": ctx.source_size,
            "content_type": ctx.source_content_type,
        },
        **{key: value for key, value in ctx.fields.items() if key != "archive"},
    }
    body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    ref = ctx.put_artifact("result.json", body, "application/json")
    return {"archive": ref.model_dump()}
