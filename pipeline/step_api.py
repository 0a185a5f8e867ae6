"""What a step sees of the pipeline: its manifest, its context, and the two kinds of failure.

Steps know images, the pipeline knows Azure. A step module (in `steps/`) defines `manifest` and
`run(ctx) -> dict`; everything it needs from storage arrives through the `StepContext` protocol,
so the same step runs on the queue path, in the sync HTTP path and in tests on a plain folder.
Nothing in this module may import an Azure SDK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from pipeline.settings import Settings

STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")

# Document fields owned by the pipeline itself; a step may not write them.
RESERVED_FIELDS = frozenset({"id", "schema", "status", "reason", "source", "steps", "route"})


def step_name(spec: str) -> str:
    """A route entry's step name: the last part of its module path (`pkg.mod.crop` → `crop`)."""
    name = spec.rsplit(".", 1)[-1]
    if not STEP_NAME.match(name):
        raise ValueError(f"step {spec!r}: name {name!r} must match {STEP_NAME.pattern}")
    return name


class ImageRejected(Exception):
    """This image can never pass this step (not an image, too large…): end it, do not retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def over_byte_limit(size: int, limit: int) -> ImageRejected | None:
    """The one wording of the byte-limit refusal, whichever context read the source."""
    if size > limit:
        return ImageRejected(f"file is {size:,} bytes, over the limit of {limit:,}")
    return None


class ArtifactMissing(Exception):
    """A blob an earlier step wrote is gone (expired by retention, deleted, or lost by an
    emulator killed before it saved): the step that wrote it must run again, not this one."""

    def __init__(self, ref: BlobRef) -> None:
        super().__init__(f"artifact {ref.container}/{ref.name} is missing")
        self.ref = ref


class SourceChanged(Exception):
    """The uploaded blob was replaced or deleted after this message was made: drop the message.

    A newer upload of the same name has its own event and its own message; finishing the stale
    one would overwrite the newer result.
    """


@dataclass(frozen=True)
class StepManifest:
    """What a step is, what it reads and writes: lets the pipeline validate a route up front."""

    name: str
    version: str
    description: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not STEP_NAME.match(self.name):
            raise ValueError(f"step name {self.name!r} must match {STEP_NAME.pattern}")
        if clash := RESERVED_FIELDS.intersection(self.writes):
            raise ValueError(f"step {self.name} may not write pipeline fields {sorted(clash)}")

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"


class BlobRef(BaseModel):
    """A pointer to a blob the pipeline wrote; what documents and messages carry, never bytes."""

    model_config = ConfigDict(extra="allow", frozen=True)
    container: str
    name: str
    content_type: str
    size: int


class StepContext(Protocol):
    """The small surface a step works against (implemented over blobs by the pipeline)."""

    image_id: str
    source_name: str
    source_size: int
    source_content_type: str | None
    attempt: int
    max_attempts: int  # on the last attempt, record a failure instead of asking for a retry
    fields: Mapping[str, Any]
    settings: Settings

    def read_source(self) -> bytes:
        """The uploaded original, refused (ImageRejected) beyond the byte limit before download."""

    def read_artifact(self, ref: BlobRef | Mapping[str, Any]) -> bytes:
        """Bytes of a blob an earlier step wrote (ArtifactMissing if it is gone)."""

    def put_artifact(
        self, name: str, data: bytes, content_type: str, public: bool = False
    ) -> BlobRef:
        """Write a derived blob under a deterministic name, so redelivery overwrites it.

        `public`: a derivative meant for publishing goes to the published container, kept apart
        from internal derivatives (the analysis image still shows faces)."""
