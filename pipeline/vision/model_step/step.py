"""A model step: the step a route entry becomes when settings describe a model for it.

It is a step like any module step — a manifest (its output model depends on the TASK), `run`
and `check` — so the registry gives it its queue, functions, lanes, retries, poison, document
field, OpenAPI schema, summary line, trace span and metrics with no code of its own. It reads
the analysis image prepare made, turns it into the model's input tensor (`preprocess`), runs
the model where its source says (`sources`), decodes what comes back (`decoders`) and writes,
under the step's name: labels with scores, objects with boxes in ORIGINAL-image pixels, a
mask (a PNG in `derived`) with the share of the image each class covers, or an embedding.

`check` compares the settings with the model before any image flows: the input tensor's name,
rank, layout, size and dtype, the output's name and shape, the class count against the labels
— and a dry run on a grey image through the decoder. A mismatch names what differs and the
setting that fixes it; health answers 503 with it, and images that reach the step end `failed`
with it, replayable once it is fixed.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline.framework.step_api import (
    StepContext,
    StepFailed,
    StepManifest,
    StoredImage,
)
from pipeline.vision.base import Box, ModelUnavailable
from pipeline.vision.model_step import decoders
from pipeline.vision.model_step.image_sources import (
    AzureMLSource,
    CustomVisionSource,
    ImageSource,
)
from pipeline.vision.model_step.preprocess import Geometry, to_tensor
from pipeline.vision.model_step.sources import (
    ModelInfo,
    TensorInfo,
    TensorSource,
    labels_from_metadata,
    size_from_metadata,
    tensor_source,
)
from pipeline.vision.model_step.spec import ModelStepSpec

SUPPORTED_DTYPES = ("float32", "float16", "uint8")
JPEG_QUALITY = 90  # what an image service is sent: the analysis image, re-encoded
MASK_PALETTE_SEED = 7


class ModelMismatch(ModelUnavailable):
    """The settings and the model disagree: each line names what differs and what to set."""


# ------------------------------------------------------------------------ the document


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Label(_Out):
    name: str
    score: float = Field(ge=0, le=1)


class ModelObject(_Out):
    name: str
    score: float = Field(ge=0, le=1)
    box: Box = Field(description="[x, y, w, h] in ORIGINAL-image pixels (after EXIF orientation).")


class Classified(_Out):
    model: str = Field(description="The model's identity: name@version, or its sha256.")
    config: str = Field(description="Digest of the step's settings that shape the result.")
    labels: list[Label] = Field(description="Best first, at or above MIN_SCORE, at most TOP_K.")


class Detected(_Out):
    model: str = Field(description="The model's identity: name@version, or its sha256.")
    config: str = Field(description="Digest of the step's settings that shape the result.")
    objects: list[ModelObject] = Field(description="Best first, after NMS.")


class Segmented(_Out):
    model: str = Field(description="The model's identity: name@version, or its sha256.")
    config: str = Field(description="Digest of the step's settings that shape the result.")
    mask: StoredImage = Field(description="Class index per pixel, a PNG at the image's size.")
    coverage: dict[str, float] = Field(description="Share of the image each class covers.")


class Embedded(_Out):
    model: str = Field(description="The model's identity: name@version, or its sha256.")
    config: str = Field(description="Digest of the step's settings that shape the result.")
    dimensions: int = Field(ge=1, description="Length of the (L2-normalised) vector.")
    container: str = Field(
        description="The vector container holding it (GET /api/images/{id}/similar?by=<step>)."
    )


RESULTS: Mapping[str, type[_Out]] = {
    "classify": Classified,
    "detect": Detected,
    "segment": Segmented,
    "embed": Embedded,
}


def _summary(name: str, task: str):
    def summarize(fields: Mapping[str, Any]) -> str | None:
        value = fields.get(name)
        if not value:
            return None
        if task == "classify":
            best = value.get("labels") or []
            return ", ".join(f"{x['name']} {x['score']:.2f}" for x in best[:3]) or "no label"
        if task == "detect":
            found = value.get("objects") or []
            top = ", ".join(f"{o['name']} {o['score']:.2f}" for o in found[:3])
            return f"{len(found)} found" + (f": {top}" if top else "")
        if task == "segment":
            shares = sorted((value.get("coverage") or {}).items(), key=lambda kv: -kv[1])
            return "mask: " + ", ".join(f"{k} {v:.0%}" for k, v in shares[:3])
        return f"embedding, {value.get('dimensions')} dimensions"

    return summarize


def manifest_for(spec: ModelStepSpec) -> StepManifest:
    result = RESULTS[spec.task]
    output = create_model(
        f"{spec.name.title().replace('_', '')}Output",
        __config__=ConfigDict(extra="forbid"),
        **{spec.name: (result, Field(description=f"The {spec.name} model step ({spec.task})."))},
    )
    return StepManifest(
        name=spec.name,
        version="1.0.0",
        description=f"Your model ({spec.task}, {spec.source}) on the analysis image.",
        reads=("image", "derived"),
        output=output,
        summarize=_summary(spec.name, spec.task),
    )


# ------------------------------------------------------------------------ the model, checked


@dataclass(frozen=True)
class Resolved:
    """The spec with what it left unset taken from the model, checked against it."""

    identity: str
    input: TensorInfo
    output: TensorInfo
    size: tuple[int, int]  # width, height
    layout: str
    labels: tuple[str, ...] | None


def _layout_of(shape: tuple[int | None, ...]) -> str | None:
    if len(shape) != 4:
        return None
    if shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if shape[3] == 3 and shape[1] != 3:
        return "NHWC"
    return None


def resolve(spec: ModelStepSpec, info: ModelInfo) -> Resolved:
    """Fill what the settings leave to the model; ModelMismatch names every disagreement."""
    problems: list[str] = []
    inputs = {t.name: t for t in info.inputs}
    if spec.input.tensor:
        tensor = inputs.get(spec.input.tensor)
        if tensor is None:
            problems.append(
                f"{spec.setting('INPUT')}={spec.input.tensor}: the model has no input of that "
                f"name (it has {', '.join(inputs) or 'none'})"
            )
    else:
        images = [t for t in info.inputs if len(t.shape) == 4]
        tensor = images[0] if len(images) == 1 else None
        if tensor is None:
            problems.append(
                f"the model's image input is not clear ({', '.join(inputs) or 'no inputs'}): "
                f"set {spec.setting('INPUT')}"
            )
    outputs = {t.name: t for t in info.outputs}
    output = (
        outputs.get(spec.output.tensor)
        if spec.output.tensor
        else info.outputs[0]
        if info.outputs
        else None
    )
    if output is None:
        problems.append(
            f"{spec.setting('OUTPUT')}={spec.output.tensor}: the model has no output of that "
            f"name (it has {', '.join(outputs) or 'none'})"
        )
    size = spec.input.size or size_from_metadata(info.metadata)
    layout = spec.input.layout
    if tensor is not None:
        shape = tensor.shape
        if len(shape) != 4:
            problems.append(
                f"input {tensor.name} has rank {len(shape)} {list(shape)}: an image input is "
                "[1, 3, H, W] (NCHW) or [1, H, W, 3] (NHWC)"
            )
        else:
            own = _layout_of(shape)
            if layout and own and layout != own:
                problems.append(
                    f"{spec.setting('LAYOUT')}={layout}, but input {tensor.name} is "
                    f"{_shape(shape)}: {own} (set LAYOUT={own})"
                )
            layout = layout or own
            if layout is None:
                problems.append(
                    f"input {tensor.name} is {_shape(shape)}: set {spec.setting('LAYOUT')} "
                    "(NCHW or NHWC)"
                )
            else:
                h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
                channels = shape[1] if layout == "NCHW" else shape[3]
                if channels not in (3, None):
                    problems.append(f"input {tensor.name} has {channels} channels, not 3")
                if h is not None and w is not None:
                    if size and size != (w, h):
                        problems.append(
                            f"{spec.setting('INPUT_SIZE')}={size[0]}x{size[1]}, but input "
                            f"{tensor.name} is {_shape(shape)}: {w}x{h} (set INPUT_SIZE={w}x{h})"
                        )
                    size = (w, h)
                elif size is None:
                    problems.append(
                        f"input {tensor.name} is {_shape(shape)} (any size): set "
                        f"{spec.setting('INPUT_SIZE')} to the size it was trained at (640x640)"
                    )
        if tensor.dtype not in SUPPORTED_DTYPES:
            problems.append(
                f"input {tensor.name} takes {tensor.dtype}: a model step feeds "
                f"{', '.join(SUPPORTED_DTYPES)}"
            )
    if problems:
        raise ModelMismatch("; ".join(problems))
    assert tensor is not None and output is not None and size is not None and layout
    labels = spec.output.labels or labels_from_metadata(info.metadata)
    return Resolved(info.identity, tensor, output, size, layout, labels)


def _shape(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# ------------------------------------------------------------------------ running it


@dataclass
class Prediction:
    """What one image gave, in image pixels (of the image the step was handed)."""

    labels: list[tuple[str, float]] | None = None
    objects: list[tuple[str, float, list[float]]] | None = None
    class_map: np.ndarray | None = None  # at the image's size
    class_names: list[str] | None = None
    vector: np.ndarray | None = None


class ModelStep:
    """One model step's model, opened once per process and shared by its threads."""

    def __init__(self, spec: ModelStepSpec, source: TensorSource) -> None:
        self.spec = spec
        self.source = source
        self._resolved: Resolved | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return self.resolved().identity

    def resolved(self) -> Resolved:
        with self._lock:
            if self._resolved is None:
                self._resolved = resolve(self.spec, self.source.info())
            return self._resolved

    def check(self) -> None:
        """Start-up: the settings fit the model, and a dry run on a grey image decodes."""
        try:
            resolved = self.resolved()
        except (StepFailed, RuntimeError) as exc:  # TryLater (unreachable, busy) stays transient
            if isinstance(exc, ModelUnavailable):
                raise
            raise ModelUnavailable(f"cannot read the model's metadata: {exc}") from exc
        grey = Image.new("RGB", resolved.size, (128, 128, 128))
        try:
            self.predict(grey)
        except decoders.MalformedOutput as exc:
            raise ModelMismatch(f"a dry run's output does not decode: {exc}") from exc
        except (StepFailed, RuntimeError) as exc:
            if isinstance(exc, ModelUnavailable):
                raise
            raise ModelUnavailable(f"a dry run failed: {exc}") from exc

    def _label(self, index: int, labels: tuple[str, ...] | None) -> str:
        if labels is None:
            return f"class {index}"
        if not 0 <= index < len(labels):
            raise decoders.MalformedOutput(
                f"class index {index} is beyond the {len(labels)} labels "
                f"({self.spec.setting('LABELS')})"
            )
        return labels[index]

    def predict(self, image: Image.Image) -> Prediction:
        resolved = self.resolved()
        spec = self.spec
        tensor, geometry = to_tensor(
            image, spec.input, resolved.size, resolved.layout, np.dtype(resolved.input.dtype)
        )
        outputs = self.source.infer({resolved.input.name: tensor})
        if resolved.output.name not in outputs:
            raise decoders.MalformedOutput(f"the answer has no output {resolved.output.name}")
        raw = outputs[resolved.output.name]
        out = spec.output
        labels = resolved.labels
        if spec.task == "classify":
            scores = decoders.class_scores(raw, out.decoder)
            if labels is not None and len(scores) != len(labels):
                raise decoders.MalformedOutput(
                    f"the model scores {len(scores)} classes but {spec.setting('LABELS')} names "
                    f"{len(labels)}"
                )
            best = decoders.top_labels(scores, out.top_k, out.min_score)
            return Prediction(labels=[(self._label(i, labels), s) for i, s in best])
        if spec.task == "detect":
            if out.decoder == "yolo":
                found = decoders.yolo(
                    raw, len(labels) if labels else None, out.min_score, out.iou, out.top_k
                )
            else:
                found = decoders.decoded_boxes(
                    raw, out.min_score, out.iou, out.top_k, resolved.size
                )
            return Prediction(
                objects=[
                    (
                        self._label(d.label, labels),
                        d.score,
                        geometry.box_to_image(d.x1, d.y1, d.x2, d.y2),
                    )
                    for d in found
                ]
            )
        if spec.task == "segment":
            classes, binary = decoders.class_map(raw, out.min_score)
            names = list(labels) if labels else None
            if binary and names is None:
                names = ["background", spec.name]
            top = int(classes.max(initial=0))
            if names is not None and top >= len(names):
                raise decoders.MalformedOutput(
                    f"class index {top} is beyond the {len(names)} labels "
                    f"({spec.setting('LABELS')})"
                )
            mapped = _mask_to_image(classes, geometry, resolved.size)
            return Prediction(class_map=mapped, class_names=names)
        return Prediction(vector=decoders.embedding(raw))


class ImageModelStep:
    """A model step whose service takes the image (Azure ML, Custom Vision): the analysis image
    is sent as a JPEG and the answer mapped; the service does its own pre- and post-processing,
    so there are no tensors to check before the first image."""

    def __init__(self, spec: ModelStepSpec, source: ImageSource) -> None:
        self.spec = spec
        self.source = source

    @property
    def identity(self) -> str:
        return self.source.identity

    def check(self) -> None:
        return None

    def predict(self, image: Image.Image, jpeg: bytes | None = None) -> Prediction:
        """`jpeg`: the image's own JPEG (the analysis image as prepare wrote it), sent as it
        is — no second lossy encoding, so the service sees the pixels the step read."""
        if jpeg is None:
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=JPEG_QUALITY)
            jpeg = out.getvalue()
        answer = self.source.predict_image(jpeg, image.width, image.height)
        return Prediction(labels=answer.labels, objects=answer.objects)


def _mask_to_image(classes: np.ndarray, geometry: Geometry, size: tuple[int, int]) -> np.ndarray:
    """A class map over the model's input → over the image (nearest neighbour), the letterbox
    padding or the crop undone; the map may be coarser than the input (a stride-8 head)."""
    height, width = classes.shape
    ys = (np.arange(geometry.height) + 0.5) * geometry.scale_y + geometry.pad_y
    xs = (np.arange(geometry.width) + 0.5) * geometry.scale_x + geometry.pad_x
    rows = np.clip((ys * height / size[1]).astype(int), 0, height - 1)
    cols = np.clip((xs * width / size[0]).astype(int), 0, width - 1)
    return classes[rows[:, None], cols[None, :]]


def mask_png(class_map: np.ndarray) -> bytes:
    """A palette PNG, one colour per class index (0 transparent black), the index kept."""
    image = Image.fromarray(class_map.astype(np.uint8), mode="P")
    rng = np.random.default_rng(MASK_PALETTE_SEED)
    palette = [0, 0, 0] + [int(v) for v in rng.integers(64, 256, size=255 * 3)]
    image.putpalette(palette)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True, transparency=0)
    return out.getvalue()


# ------------------------------------------------------------------------ the step


_steps: dict[tuple[str, ModelStepSpec], ModelStep | ImageModelStep] = {}
_steps_lock = threading.Lock()


def model_step(spec: ModelStepSpec, root: Path) -> ModelStep | ImageModelStep:
    """One per spec per process: the model is opened (or the client built) once."""
    with _steps_lock:
        key = (str(root), spec)
        if key not in _steps:
            if spec.source == "azureml":
                from pipeline.stores.azure_clients import default_credential

                credential = None if spec.azureml_key else default_credential()
                _steps[key] = ImageModelStep(spec, AzureMLSource(spec, credential))
            elif spec.source == "customvision":
                _steps[key] = ImageModelStep(spec, CustomVisionSource(spec))
            else:
                _steps[key] = ModelStep(spec, tensor_source(spec, root))
        return _steps[key]


def run_model_step(ctx: StepContext, spec: ModelStepSpec, root: Path) -> dict[str, Any]:
    step = model_step(spec, root)
    earlier = ctx.fields.get(spec.name)
    if (
        isinstance(earlier, dict)
        and earlier.get("config") == spec.digest()
        and earlier.get("model") == step.identity
    ):
        # answered already for this image by this model and configuration (the sync path):
        # the same answer, without calling the model (or paying its service) again
        return {spec.name: earlier}
    data = ctx.read_artifact(ctx.fields["derived"]["analysis"])
    with Image.open(io.BytesIO(data)) as decoded:
        image = decoded.convert("RGB")
        jpeg = data if decoded.format == "JPEG" else None
    try:
        if isinstance(step, ImageModelStep):
            prediction = step.predict(image, jpeg)
        else:
            prediction = step.predict(image)
    except decoders.MalformedOutput as exc:
        # the model's answer, not the photo nor the weather: retrying gives the same
        raise StepFailed(f"the model's answer is malformed: {exc}") from exc
    identity = step.identity
    config = spec.digest()
    sx = ctx.fields["image"]["width"] / image.width
    sy = ctx.fields["image"]["height"] / image.height
    if spec.task == "classify":
        value: dict[str, Any] = {
            "model": identity,
            "config": config,
            "labels": [{"name": n, "score": round(s, 6)} for n, s in prediction.labels or []],
        }
    elif spec.task == "detect":
        value = {
            "model": identity,
            "config": config,
            "objects": [
                {
                    "name": n,
                    "score": round(s, 6),
                    "box": [
                        round(box[0] * sx, 1),
                        round(box[1] * sy, 1),
                        round(box[2] * sx, 1),
                        round(box[3] * sy, 1),
                    ],
                }
                for n, s, box in prediction.objects or []
            ],
        }
    elif spec.task == "segment":
        classes = prediction.class_map
        assert classes is not None
        full = Image.fromarray(classes.astype(np.uint8), mode="L").resize(
            (ctx.fields["image"]["width"], ctx.fields["image"]["height"]), Image.Resampling.NEAREST
        )
        counts = np.bincount(np.asarray(full).ravel(), minlength=1)
        total = float(counts.sum()) or 1.0
        names = prediction.class_names or [f"class {i}" for i in range(len(counts))]
        ref = ctx.put_artifact(f"{spec.name}-mask.png", mask_png(np.asarray(full)), "image/png")
        value = {
            "model": identity,
            "config": config,
            "mask": {**ref.model_dump(), "width": full.width, "height": full.height},
            "coverage": {
                names[i]: round(float(c) / total, 4)
                for i, c in enumerate(counts)
                if c and i < len(names)
            },
        }
    else:
        vector = prediction.vector
        assert vector is not None and spec.container
        if spec.dimensions and vector.size != spec.dimensions:
            raise StepFailed(
                f"the embedding has {vector.size} dimensions, not {spec.setting('DIMENSIONS')}="
                f"{spec.dimensions}"
            )
        ctx.save_vector(spec.container, identity, [round(float(v), 6) for v in vector])
        value = {
            "model": identity,
            "config": config,
            "dimensions": int(vector.size),
            "container": spec.container,
        }
    return {spec.name: value}


def check_model_step(spec: ModelStepSpec, root: Path) -> None:
    model_step(spec, root).check()


def embedding_dimensions(spec: ModelStepSpec, root: Path) -> int:
    """An embedding step's vector length: DIMENSIONS, else the model's (a dry run if its output
    shape does not say)."""
    if spec.dimensions:
        return spec.dimensions
    step = model_step(spec, root)
    assert isinstance(step, ModelStep)
    last = step.resolved().output.shape[-1]
    if last:
        return last
    grey = Image.new("RGB", step.resolved().size, (128, 128, 128))
    vector = step.predict(grey).vector
    assert vector is not None
    return int(vector.size)
