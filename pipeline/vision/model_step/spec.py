"""A model step described by settings alone: `DARKROOM_MODEL_<NAME>__<KEY>`.

The names are a contract (docs/models.md): TASK; exactly one source (ONNX [+ SHA256], OIP_URL +
OIP_MODEL [+ OIP_VERSION], AZUREML_URL [+ AZUREML_DEPLOYMENT, AZUREML_KEY], CUSTOMVISION_URL +
CUSTOMVISION_KEY); the input (INPUT_SIZE, RESIZE, INTERPOLATION, LAYOUT, COLOR, SCALE, MEAN,
STD, INPUT); the output (DECODER, LABELS, MIN_SCORE, IOU, TOP_K, OUTPUT); TIMEOUT_MS,
CONCURRENCY (remote calls in flight per process); for an embedding, DIMENSIONS and CONTAINER.

They are read through the one settings reader, so a model step's settings are in the catalog
and a bad value is a line of `SettingsError` like any other. What is left unset is taken from
the model where it says (`step.resolve`, at start-up): the ONNX input's shape, its metadata (an
Ultralytics export's `names` and `imgsz`), a model server's metadata.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pipeline.setting_reader import SettingReader

Task = Literal["classify", "detect", "segment", "embed"]
Decoder = Literal["softmax", "sigmoid", "scores", "yolo", "boxes", "mask", "embedding"]
Source = Literal["onnx", "oip", "azureml", "customvision"]
TASKS: tuple[str, ...] = ("classify", "detect", "segment", "embed")
DECODERS: tuple[str, ...] = ("softmax", "sigmoid", "scores", "yolo", "boxes", "mask", "embedding")
# Which decoders answer which task; the first is the default when DECODER is unset.
TASK_DECODERS: Mapping[str, tuple[str, ...]] = {
    "classify": ("softmax", "sigmoid", "scores"),
    "detect": ("yolo", "boxes"),
    "segment": ("mask",),
    "embed": ("embedding",),
}
PREFIX = "DARKROOM_MODEL_"
# Services that take the image itself and do their own pre- and post-processing.
IMAGE_SOURCES = ("azureml", "customvision")
TENSOR_SETTINGS = frozenset(
    {
        "INPUT_SIZE",
        "RESIZE",
        "INTERPOLATION",
        "LAYOUT",
        "COLOR",
        "SCALE",
        "MEAN",
        "STD",
        "INPUT",
        "OUTPUT",
        "DECODER",
        "IOU",
    }
)
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX,]\s*(\d{1,5})\s*$")


def setting(name: str, key: str) -> str:
    """`DARKROOM_MODEL_<NAME>__<KEY>`: NAME is the route entry upper-cased."""
    return f"{PREFIX}{name.upper()}__{key}"


def model_step_names(env: Mapping[str, str]) -> set[str]:
    """Route-entry names (lower case) that have settings of a model step."""
    return {
        key[len(PREFIX) :].split("__", 1)[0].lower()
        for key in env
        if key.startswith(PREFIX) and "__" in key[len(PREFIX) :]
    }


@dataclass(frozen=True)
class InputSpec:
    """How the analysis image becomes the model's input tensor (tensor sources)."""

    size: tuple[int, int] | None = None  # (width, height); None: from the model
    resize: Literal["stretch", "letterbox", "center_crop"] = "stretch"
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    layout: Literal["NCHW", "NHWC"] | None = None  # None: from the model's input shape
    color: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    tensor: str | None = None  # the input's name; None: the model's only image input


@dataclass(frozen=True)
class OutputSpec:
    decoder: Decoder
    labels: tuple[str, ...] | None = None  # None: from the model's metadata, else "class N"
    min_score: float = 0.25
    iou: float = 0.45
    top_k: int = 5
    tensor: str | None = None  # which output; None: the model's first


@dataclass(frozen=True)
class ModelStepSpec:
    name: str
    task: Task
    source: Source
    onnx: str | None = None
    sha256: str | None = None
    oip_url: str | None = None
    oip_model: str | None = None
    oip_version: str | None = None
    azureml_url: str | None = None
    azureml_deployment: str | None = None
    azureml_key: str | None = field(default=None, repr=False)
    customvision_url: str | None = None
    customvision_key: str | None = field(default=None, repr=False)
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=lambda: OutputSpec("softmax"))
    timeout_ms: int = 10_000
    concurrency: int = 4  # remote calls in flight per process
    dimensions: int | None = None  # an embedding's length; None: from the model's output
    container: str | None = None  # where an embedding step keeps its vectors
    # Which settings were set (not defaulted): a mismatch with the model names these.
    explicit: frozenset[str] = frozenset()

    def setting(self, key: str) -> str:
        return setting(self.name, key)

    def digest(self) -> str:
        """What the result depends on besides the model itself — task, source, input and
        output settings (keys left out) — as 12 hex digits: a result with the same model and
        digest is the same result."""
        import hashlib

        parts = (
            self.task,
            self.source,
            self.onnx,
            self.sha256,
            self.oip_url,
            self.oip_model,
            self.oip_version,
            self.azureml_url,
            self.azureml_deployment,
            self.customvision_url,
            self.input,
            self.output,
            self.dimensions,
            self.container,
        )
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]

    def with_input(self, **changes) -> ModelStepSpec:
        return replace(self, input=replace(self.input, **changes))

    def with_output(self, **changes) -> ModelStepSpec:
        return replace(self, output=replace(self.output, **changes))


def _floats(r: SettingReader, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = r.text(name, ",".join(f"{v:g}" for v in default))
    try:
        values = tuple(float(v) for v in raw.replace(" ", "").split(",") if v)
    except ValueError:
        r.problems.append(f"{name} must be one number or three, comma-separated, not {raw!r}")
        return default
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        r.problems.append(f"{name} must be one number or three (per channel), not {raw!r}")
        return default
    return values


def _scale(r: SettingReader, name: str) -> float:
    """A number or a fraction (`1/255`, the usual way to write it)."""
    raw = r.text(name, "1/255")
    try:
        top, _, bottom = raw.partition("/")
        value = float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        r.problems.append(f"{name} must be a number such as 1/255 or 0.00392, not {raw!r}")
        return 1 / 255
    return value


def _labels(r: SettingReader, name: str, root: Path) -> tuple[str, ...] | None:
    """A comma list, or a file (relative to the app root), one label a line."""
    raw = r.optional(name)
    if not raw:
        return None
    path = Path(raw) if Path(raw).is_absolute() else root / raw
    if ("," not in raw and path.suffix in (".txt", ".names", ".labels")) or path.is_file():
        try:
            return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        except OSError as exc:
            r.problems.append(f"{name}: cannot read the labels file {raw!r} ({exc.strerror})")
            return None
    return tuple(label.strip() for label in raw.split(",") if label.strip())


def read_spec(r: SettingReader, name: str, root: Path) -> ModelStepSpec | None:
    """The model step `name` (a route entry) as its settings describe it; None when it has no
    TASK (then it is not a model step, and the route names a missing module)."""

    def key(k: str) -> str:
        return setting(name, k)

    env = r.env
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
        r.problems.append(
            f"{key('TASK')}: a model step's name is a route entry — a letter, then letters, "
            f"digits or _ (up to 64) — not {name!r}"
        )
        return None
    explicit = frozenset(k.split("__", 1)[1] for k in env if k.startswith(key("")))
    if "TASK" not in explicit:
        if explicit:
            r.problems.append(
                f"{key('TASK')} must be set (classify, detect, segment or embed): "
                f"{name!r} has model settings ({', '.join(sorted(explicit))}) but no task"
            )
        return None
    task = r.text(key("TASK"), "classify", TASKS)
    sources = {
        "onnx": ("ONNX",),
        "oip": ("OIP_URL", "OIP_MODEL"),
        "azureml": ("AZUREML_URL",),
        "customvision": ("CUSTOMVISION_URL", "CUSTOMVISION_KEY"),
    }
    given = [s for s, keys in sources.items() if any(k in explicit for k in keys)]
    if len(given) != 1:
        r.problems.append(
            f"model step {name!r} needs exactly one source — {key('ONNX')}, {key('OIP_URL')}, "
            f"{key('AZUREML_URL')} or {key('CUSTOMVISION_URL')} — not "
            f"{', '.join(given) if given else 'none'}"
        )
        return None
    source = given[0]
    for needed in sources[source]:
        if needed not in explicit:
            r.problems.append(f"{key(needed)} must be set for a {source} model step")
    if source in IMAGE_SOURCES:
        if task not in ("classify", "detect"):
            r.problems.append(f"a {source} model step classifies or detects, not TASK={task}")
        if tensor_settings := sorted(explicit & TENSOR_SETTINGS):
            r.problems.append(
                f"model step {name!r}: {', '.join(key(k) for k in tensor_settings)} are for "
                f"tensor sources (ONNX, OIP_URL); {source} prepares the image itself"
            )
    size = None
    if raw_size := r.optional(key("INPUT_SIZE")):
        if match := _SIZE.match(raw_size):
            size = (int(match.group(1)), int(match.group(2)))
        else:
            r.problems.append(
                f"{key('INPUT_SIZE')} must be WIDTHxHEIGHT (640x640), not {raw_size!r}"
            )
    layout = r.text(key("LAYOUT"), "", ("", "nchw", "nhwc")).upper() or None
    decoders = TASK_DECODERS[task]
    decoder = r.text(key("DECODER"), decoders[0], DECODERS)
    if decoder not in decoders:
        r.problems.append(
            f"{key('DECODER')}={decoder} does not answer TASK={task}: use {', '.join(decoders)}"
        )
        decoder = decoders[0]
    for url_key in ("OIP_URL", "AZUREML_URL", "CUSTOMVISION_URL"):
        if (url := env.get(key(url_key))) and not re.match(r"^https?://[^/\s]+", url):
            r.problems.append(f"{key(url_key)} must be an http(s) URL, not {url!r}")
    sha = r.optional(key("SHA256"))
    if sha and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        r.problems.append(f"{key('SHA256')} must be 64 hex digits, not {sha!r}")
    onnx = r.optional(key("ONNX"))
    if onnx and onnx.startswith("http") and not sha:
        r.problems.append(f"{key('SHA256')} must pin a model read from a URL ({key('ONNX')})")
    score = {"cast": float, "minimum": 0.0, "maximum": 1.0}
    return ModelStepSpec(
        name=name,
        task=task,
        source=source,
        onnx=onnx,
        sha256=sha.lower() if sha else None,
        oip_url=(r.optional(key("OIP_URL")) or "").rstrip("/") or None,
        oip_model=r.optional(key("OIP_MODEL")),
        oip_version=r.optional(key("OIP_VERSION")),
        azureml_url=r.optional(key("AZUREML_URL")),
        azureml_deployment=r.optional(key("AZUREML_DEPLOYMENT")),
        azureml_key=r.optional(key("AZUREML_KEY"), secret=True),
        customvision_url=r.optional(key("CUSTOMVISION_URL")),
        customvision_key=r.optional(key("CUSTOMVISION_KEY"), secret=True),
        input=InputSpec(
            size=size,
            resize=r.text(key("RESIZE"), "stretch", ("stretch", "letterbox", "center_crop")),
            interpolation=r.text(
                key("INTERPOLATION"), "bilinear", ("bilinear", "bicubic", "nearest")
            ),
            layout=layout,
            color=r.text(key("COLOR"), "rgb", ("rgb", "bgr")).upper(),
            scale=_scale(r, key("SCALE")),
            mean=_floats(r, key("MEAN"), (0.0, 0.0, 0.0)),
            std=_floats(r, key("STD"), (1.0, 1.0, 1.0)),
            tensor=r.optional(key("INPUT")),
        ),
        output=OutputSpec(
            decoder=decoder,
            labels=_labels(r, key("LABELS"), root),
            min_score=r.number(key("MIN_SCORE"), 0.25, **score),
            iou=r.number(key("IOU"), 0.45, **score),
            top_k=r.number(
                key("TOP_K"), 5 if task == "classify" else 100, minimum=1, maximum=10_000
            ),
            tensor=r.optional(key("OUTPUT")),
        ),
        timeout_ms=r.number(key("TIMEOUT_MS"), 10_000, minimum=10, maximum=600_000),
        concurrency=r.number(key("CONCURRENCY"), 4, minimum=1, maximum=256),
        dimensions=r.number(key("DIMENSIONS"), 0, minimum=0, maximum=16_384) or None,
        container=r.text(key("CONTAINER"), f"embeddings-{name}") if task == "embed" else None,
        explicit=explicit,
    )
