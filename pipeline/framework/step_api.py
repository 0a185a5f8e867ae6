"""What a step sees of the pipeline: its manifest, its context, and the two kinds of failure.

Steps know images, the pipeline knows Azure. A step module (in `steps/`) defines `manifest` and
`run(ctx) -> dict`; everything it needs from storage arrives through the `StepContext` protocol,
so the same step runs on the queue path, in the sync HTTP path and in tests on a plain folder.
Nothing in this module may import an Azure SDK.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticSerializationError, to_json

if TYPE_CHECKING:  # a step sees the settings through its context; the contract needs no more
    from pipeline.settings import Settings

STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")

# Document fields owned by the pipeline itself; a step may not write them.
RESERVED_FIELDS = frozenset(
    {
        "id",
        "schema",
        "status",
        "reason",
        "source",
        "steps",
        "route",
        "ingested_at",
        "updated_at",
        "pending",
        "notifications",
        "owner",
    }
)


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


class StepFailed(Exception):
    """This image fails at this step for a reason retrying cannot change — a model server
    refused the request (400), a model answered something malformed. The image ends `failed`
    with the reason at once (no retry storm) and its message waits in poison, replayable once
    the cause is fixed. (A bad image is `ImageRejected`; a step that cannot run at all says so
    in its `check`.)"""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TryLater(Exception):
    """Transient, with the wait the other side asked for (HTTP 429/503 `Retry-After`): retried
    like any transient error, but not sooner than `retry_after` seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


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


class StepContractViolation(TypeError):
    """The step's code broke its own manifest (undeclared fields, not a dict, a field that does
    not match its output model): a programming error that the same code repeats on every
    attempt, so it is not retried."""


def _no_summary(fields: Mapping[str, Any]) -> str | None:
    return None


def _untyped_output(name: str, writes: tuple[str, ...]) -> type[BaseModel]:
    """The output model of a manifest that names its fields but declares no model: any JSON."""
    camel = "".join(part.title() for part in name.split("_"))
    fields: dict[str, Any] = {
        key: (Any, Field(None, description=f"Written by step `{name}` (no declared model)."))
        for key in writes
    }
    return create_model(f"{camel}Output", **fields)


def _error_text(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "output"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


@dataclass(frozen=True)
class StepManifest:
    """What a step is, what it reads and writes: lets the pipeline validate a route up front.

    `output` is a pydantic model whose top-level fields are exactly the document fields the step
    writes (`writes` is derived from it when not given; when given, both must name the same
    fields). The runner checks every result against it, and the image document's model (and so
    the API schema) is composed from the route's output models. `summarize` turns the step's
    fields (plain JSON, as stored) into one short line for people — the CLI, the completion
    event, the page — or None when there is nothing to say. It must never print a GPS position.
    A manifest with `writes` but no `output` still works: its fields are then untyped.
    """

    name: str
    version: str
    description: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    output: type[BaseModel] | None = None
    summarize: Callable[[Mapping[str, Any]], str | None] = _no_summary

    def __post_init__(self) -> None:
        if not STEP_NAME.match(self.name):
            raise ValueError(f"step name {self.name!r} must match {STEP_NAME.pattern}")
        if self.output is None:
            object.__setattr__(self, "output", _untyped_output(self.name, tuple(self.writes)))
        elif not (isinstance(self.output, type) and issubclass(self.output, BaseModel)):
            raise ValueError(f"step {self.name}: output must be a pydantic model class")
        else:
            declared = tuple(info.alias or key for key, info in self.output.model_fields.items())
            if not self.writes:
                object.__setattr__(self, "writes", declared)
            elif set(declared) != set(self.writes):
                raise ValueError(
                    f"step {self.name}: output model {self.output.__name__} has fields "
                    f"{sorted(declared)}, but the manifest writes {sorted(self.writes)}"
                )
        if clash := RESERVED_FIELDS.intersection(self.writes):
            raise ValueError(f"step {self.name} may not write pipeline fields {sorted(clash)}")
        if not callable(self.summarize):
            raise ValueError(f"step {self.name}: summarize must be callable")

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    def check_output(self, output: Any) -> dict[str, Any]:
        """The step's result, unchanged, once it is known to match this manifest.

        Validated as the JSON the pipeline will store (strict: no "3" for 3), so what passes is
        what the output model — and the API schema built from it — says. The dict itself is
        returned, not the model's dump: the stored JSON stays exactly what the step wrote (no
        defaults or nulls added, 214 stays 214). Raises StepContractViolation.
        """
        if not isinstance(output, dict):
            raise StepContractViolation(
                f"step {self.name} returned {type(output).__name__}, expected a dict"
            )
        undeclared = set(output) - set(self.writes)
        if undeclared or RESERVED_FIELDS.intersection(output):
            raise StepContractViolation(
                f"step {self.name} wrote fields it does not declare: {sorted(map(str, undeclared))}"
            )
        assert self.output is not None  # set in __post_init__
        try:
            self.output.model_validate_json(to_json(output), strict=True)
        except PydanticSerializationError as exc:
            raise StepContractViolation(
                f"step {self.name} returned output that is not JSON: {str(exc)[:200]}"
            ) from exc
        except ValidationError as exc:
            raise StepContractViolation(
                f"step {self.name} wrote output that does not match "
                f"{self.output.__name__}: {_error_text(exc)}"[:500]
            ) from exc
        return output


class BlobRef(BaseModel):
    """A pointer to a blob the pipeline wrote; what documents and messages carry, never bytes."""

    model_config = ConfigDict(extra="allow", frozen=True)
    container: str
    name: str
    content_type: str
    size: int


class StoredBlob(BaseModel):
    """A blob a step wrote, as its output names it (a `BlobRef` with nothing extra)."""

    model_config = ConfigDict(extra="forbid", title="StoredBlob")
    container: str = Field(description="Storage container of the blob.")
    name: str = Field(description="Blob name, `<image id>/<artifact>`.")
    content_type: str = Field(description="MIME type the blob was written with.")
    size: int = Field(ge=0, description="Size in bytes.")


class StoredImage(StoredBlob):
    """An image blob a step wrote, with its pixel size."""

    model_config = ConfigDict(extra="forbid", title="StoredImage")
    width: int = Field(ge=1, description="Width in pixels.")
    height: int = Field(ge=1, description="Height in pixels.")


def face_id(image_id: str, index: int, model: str) -> str:
    """A face's id in the faces store: the same image, face and model give the same id, so a
    redelivered recognition rewrites its own records."""
    return hashlib.sha256(f"{image_id}:{index}:{model}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FaceEntry:
    """One detected face as a step hands it to the faces store: the embedding goes to the
    store only, never into a document, a message or an event."""

    face_id: str
    face: int  # index into analysis.faces
    box: tuple[float, float, float, float]  # original-image pixels
    usable: bool
    reason: str | None
    embedding: tuple[float, ...] | None  # None when not usable


@dataclass(frozen=True)
class FaceVerdict:
    person: str | None  # the person the face joined, if any
    hide: bool  # the face matches someone who withdrew consent: always anonymised


class FaceBook(Protocol):
    """Where a step's faces are matched to people (the pipeline's faces store on Cosmos DB)."""

    def record(self, model: str, faces: list[FaceEntry]) -> list[FaceVerdict]:
        """Store the faces (idempotently: one record per face id) and match them."""


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
    faces: FaceBook | None  # None where no faces store is at hand (a plain file, a test)

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

    def save_vector(self, container: str, model: str, vector: list[float]) -> None:
        """Keep this image's embedding in a vector container (an embedding model step's), so
        the image can be found by similarity; one per image, written again on redelivery."""

    def drop_artifact(self, ref: BlobRef | Mapping[str, Any]) -> None:
        """Delete a blob an earlier step wrote that must not be kept (the analysis image of a
        photo with faces that must be hidden). A step that reads it later gets ArtifactMissing,
        and the pipeline sends the image back to the step that wrote it to make it again."""
