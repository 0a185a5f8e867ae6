"""Set-up time: convert the CenterNet TensorFlow.js graph model to ONNX for the objects analyzer.

    python -m local.export_detector [--out PATH] [--force]
    python -m local.export_detector --record-reference

Why a converter of our own: the detector must run in-process on Azure Functions (no Node there),
and the only COCO detector weights a registry ships are this tfjs graph model inside the npm
package `@vladmandic/human` (`models/centernet.json` + `centernet.bin`). tf2onnx reads tfjs models
but needs TensorFlow (a ~600 MB set-up dependency) and brings its own pins; the graph uses 26
TensorFlow op types, all with a direct ONNX counterpart, so this module translates them itself
with the `onnx` package (already a set-up dependency for the tagger's export).

The translation (opset 18):
- weights are read from the .bin as the manifest says (float16-quantized floats stay float16 in
  the ONNX file behind a `Cast` to float32, which onnxruntime folds at load: half the size, the
  same values tfjs uses);
- TensorFlow's NHWC activations are carried as NCHW between convolutions (filters transposed at
  conversion), with a `Transpose` only where an op needs TensorFlow's layout: three in all, the
  input's and one before each of the decoder's two `Reshape`s of a 4-D tensor;
- `SAME` padding is ONNX's `SAME_UPPER` (the extra row/column at the end, as TensorFlow pads);
  `ResizeBilinear` without align_corners/half_pixel_centers is `Resize` linear "asymmetric";
  integer `FloorDiv`/`FloorMod` are exact for either sign ((a - floormod(a, b)) / b).
Any op or attribute outside what the graph uses stops the conversion with its name: the converter
translates this model, not TensorFlow at large.

The check before anything is written: the converted model on onnxruntime against the outputs
TensorFlow.js 4.22 (WebAssembly backend) computed for the same input canvases, recorded in
`tests/fixtures/centernet-tfjs-reference.json` (by `--record-reference`, which runs
`scripts/centernet_tfjs_reference.js`; TensorFlow.js is not installed by set-up). Every one of
the 100 detections per canvas with a score of at least 0.05, on either side, must have its
counterpart: the same class, the score within 1e-3, the box within 0.5 px (of 512).

Writes `PATH` (default `pipeline/vision/local/models/centernet-mobilenetv3.onnx`) and its sidecar
`centernet-mobilenetv3.json` (source package and version, SHA-256 of the source files, of the
reference and of the ONNX file, the check's figures), each atomically, the sidecar last.
Idempotent: when the sidecar names the same sources, converter and reference and the ONNX file
matches its SHA-256, it exits 0 at once without importing onnx or onnxruntime.

Exit status: 0 converted or already up to date; 1 the conversion or its check failed; 2 a set-up
package or file is missing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from local.atomic import model_is_current, publish_model, temporary_file
from pipeline.vision.local.objects_centernet import (
    DEFAULT_MODEL_PATH,
    INPUT_NAME,
    INPUT_SHAPE,
    LABELS,
    MODEL_NAME,
    OUTPUT_NAME,
    OUTPUT_SHAPE,
    SOURCE_PACKAGE,
    letterbox,
)
from pipeline.vision.local.onnx_session import file_sha256

CONVERTER_VERSION = 1  # bump when the translation changes: set-up then converts again
OPSET = 18
IR_VERSION = 10  # what onnxruntime 1.31 reads; the ops are all opset 18
PROJECT_ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = PROJECT_ROOT / "node_modules"
SOURCE_DIR = NODE_MODULES / SOURCE_PACKAGE
SOURCE_FILES = ("models/centernet.json", "models/centernet.bin")
TF_INPUT = "tower_0/images"
TF_OUTPUT = "tower_0/detections"
REFERENCE = PROJECT_ROOT / "tests" / "fixtures" / "centernet-tfjs-reference.json"
REFERENCE_SCRIPT = PROJECT_ROOT / "scripts" / "centernet_tfjs_reference.js"
CHECK_IMAGES = (
    "samples/dog-bicycle.jpg",
    "samples/person-dog-horse.jpg",
    "samples/horses-field.jpg",
    "samples/giraffe-zebra.jpg",
)
CHECK_MIN_SCORE = 0.05
MAX_SCORE_DIFF = 1e-3
MAX_BOX_DIFF = 0.5  # pixels of the 512x512 canvas
INSTALL_HINT = "run make setup (pip install -r requirements-dev.txt; npm ci)"


class ExportError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[export_detector] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- sources


def source_version(source_dir: Path = SOURCE_DIR) -> str | None:
    try:
        return str(json.loads((source_dir / "package.json").read_text("utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def sources(source_dir: Path = SOURCE_DIR) -> dict[str, Any]:
    """What the ONNX file is made from: any change means converting (and checking) again."""
    files = {}
    for name in SOURCE_FILES:
        path = source_dir / name
        if not path.is_file():
            raise ExportError(
                f"{SOURCE_PACKAGE} has no {name} in {source_dir.parent}: {INSTALL_HINT}"
            )
        files[name] = file_sha256(path)
    if not REFERENCE.is_file():
        raise ExportError(f"the tfjs reference {REFERENCE} is missing (see --record-reference)")
    return {
        "package": SOURCE_PACKAGE,
        "version": source_version(source_dir),
        "files": files,
        "reference_sha256": file_sha256(REFERENCE),
        "converter": CONVERTER_VERSION,
    }


def up_to_date(out: Path, wanted: dict[str, Any]) -> bool:
    return model_is_current(out, source=wanted)


@dataclass
class TfjsGraph:
    nodes: dict[str, dict]  # by name, as in modelTopology
    weights: dict[str, tuple[np.ndarray, bool]]  # name -> (array, stored as float16)


def read_tfjs(json_path: Path) -> TfjsGraph:
    """A tfjs graph model: its nodes and its weights, decoded as the weights manifest says."""
    spec = json.loads(json_path.read_text("utf-8"))
    if spec.get("format") != "graph-model":
        raise ExportError(f"{json_path}: not a tfjs graph model (format {spec.get('format')!r})")
    weights: dict[str, tuple[np.ndarray, bool]] = {}
    for group in spec["weightsManifest"]:
        data = b"".join((json_path.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quantization = w.get("quantization")
            if quantization:
                if quantization.get("dtype") != "float16" or w["dtype"] != "float32":
                    raise ExportError(
                        f"weight {w['name']}: unsupported quantization {quantization}"
                    )
                dtype, fp16 = np.dtype(np.float16), True
            else:
                dtypes = {"float32": np.float32, "int32": np.int32}
                if w["dtype"] not in dtypes:
                    raise ExportError(f"weight {w['name']}: unsupported dtype {w['dtype']}")
                dtype, fp16 = np.dtype(dtypes[w["dtype"]]), False
            array = np.frombuffer(data, dtype.newbyteorder("<"), count, offset).reshape(shape)
            offset += count * dtype.itemsize
            weights[w["name"]] = (array.astype(dtype), fp16)
        if offset != len(data):
            raise ExportError(f"{json_path}: weights use {offset} of {len(data)} bytes")
    nodes = {n["name"]: n for n in spec["modelTopology"]["node"]}
    return TfjsGraph(nodes, weights)


# ----------------------------------------------------------------------------- conversion


def _ints(node: dict, attr: str) -> list[int]:
    return [int(v) for v in node.get("attr", {}).get(attr, {}).get("list", {}).get("i", [])]


def _str(node: dict, attr: str) -> str:
    return base64.b64decode(node["attr"][attr]["s"]).decode()


def _strs(node: dict, attr: str) -> list[str]:
    raw = node.get("attr", {}).get(attr, {}).get("list", {}).get("s", [])
    return [base64.b64decode(s).decode() for s in raw]


def _bool(node: dict, attr: str) -> bool:
    return bool(node.get("attr", {}).get(attr, {}).get("b", False))


def _int(node: dict, attr: str) -> int:
    return int(node.get("attr", {}).get(attr, {}).get("i", 0))


def _type(node: dict, attr: str) -> str:
    return str(node["attr"][attr]["type"])


NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
NCHW_AXIS = (0, 2, 3, 1)  # where NHWC axis i lives in NCHW
INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class _Value:
    name: str  # the ONNX tensor
    nchw: bool  # a 4-D activation carried as NCHW (TensorFlow's NHWC, permuted)


class _Converter:
    """TensorFlow graph nodes (as tfjs stores them) → ONNX nodes, for the ops this model uses."""

    def __init__(self, graph: TfjsGraph) -> None:
        from onnx import TensorProto

        self.TensorProto = TensorProto
        self.graph = graph
        self.nodes: list = []
        self.initializers: list = []
        self.values: dict[str, _Value] = {}
        self._names: set[str] = set()
        self._layout_cache: dict[tuple[str, bool], str] = {}

    # -- helpers

    def fresh(self, hint: str) -> str:
        name, n = hint, 0
        while name in self._names:
            n += 1
            name = f"{hint}_{n}"
        self._names.add(name)
        return name

    def emit(self, op: str, inputs: list[str], hint: str, outputs: int = 1, **attrs) -> list[str]:
        from onnx import helper

        names = [self.fresh(hint if i == 0 else f"{hint}:{i}") for i in range(outputs)]
        self.nodes.append(
            helper.make_node(op, inputs, names, name=self.fresh(f"{hint}/{op}"), **attrs)
        )
        return names

    def initializer(self, array: np.ndarray, hint: str, fp16: bool = False) -> str:
        """A constant; float16-stored weights stay float16 and are cast to float32 in the graph."""
        from onnx import numpy_helper

        if fp16:
            raw = self.fresh(f"{hint}/fp16")
            self.initializers.append(numpy_helper.from_array(np.asarray(array, np.float16), raw))
            return self.emit("Cast", [raw], hint, to=self.TensorProto.FLOAT)[0]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def int64(self, values, hint: str) -> str:
        return self.initializer(np.asarray(values, np.int64), hint)

    @staticmethod
    def ref(tf_input: str) -> str:
        return tf_input if ":" in tf_input else f"{tf_input}:0"

    def is_const(self, tf_input: str) -> bool:
        name = tf_input.split(":")[0]
        return self.graph.nodes[name]["op"] == "Const"

    def const(self, tf_input: str) -> tuple[np.ndarray, bool]:
        name = tf_input.split(":")[0]
        if name not in self.graph.weights:
            raise ExportError(f"constant {name} has no weights in the manifest")
        return self.graph.weights[name]

    def const_ints(self, tf_input: str) -> list[int]:
        array, _ = self.const(tf_input)
        return [int(v) for v in np.asarray(array).ravel()]

    def value(self, tf_input: str) -> _Value:
        if self.is_const(tf_input):
            array, fp16 = self.const(tf_input)
            value = _Value(self.initializer(array, tf_input.split(":")[0], fp16), False)
            self.values[self.ref(tf_input)] = value
        return self.values[self.ref(tf_input)]

    def as_layout(self, tf_input: str, nchw: bool) -> str:
        value = self.value(tf_input)
        if value.nchw == nchw:
            return value.name
        key = (value.name, nchw)
        if key not in self._layout_cache:
            perm = NHWC_TO_NCHW if nchw else NCHW_TO_NHWC
            hint = f"{value.name}/{'nchw' if nchw else 'nhwc'}"
            self._layout_cache[key] = self.emit("Transpose", [value.name], hint, perm=list(perm))[0]
        return self._layout_cache[key]

    def nchw(self, tf_input: str) -> str:
        return self.as_layout(tf_input, True)

    def tf(self, tf_input: str) -> str:
        return self.as_layout(tf_input, False)

    def set(self, node: dict, names: list[str], nchw: bool) -> None:
        for i, name in enumerate(names):
            self.values[f"{node['name']}:{i}"] = _Value(name, nchw)

    @staticmethod
    def data_inputs(node: dict) -> list[str]:
        return [i for i in node.get("input", []) if not i.startswith("^")]

    # -- the graph

    def order(self, output: str) -> list[dict]:
        """The nodes `output` depends on, each after its inputs (iterative depth-first)."""
        done: set[str] = set()
        ordered: list[dict] = []
        stack: list[tuple[str, bool]] = [(output, False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if name not in self.graph.nodes:
                raise ExportError(f"node {name} is referenced but not in the graph")
            node = self.graph.nodes[name]
            if expanded:
                done.add(name)
                ordered.append(node)
                continue
            stack.append((name, True))
            for tf_input in node.get("input", []):
                dep = tf_input.lstrip("^").split(":")[0]
                if dep not in done:
                    stack.append((dep, False))
        return ordered

    def convert(self):
        from onnx import helper

        for node in self.order(TF_OUTPUT):
            op = node["op"]
            if op == "Const":
                continue  # materialised where used, in the layout its consumer needs
            handler = getattr(self, f"op_{op.lstrip('_')}", None)
            if handler is None:
                raise ExportError(f"TensorFlow op {op} ({node['name']}) is not supported")
            handler(node)
        out = self.tf(TF_OUTPUT)
        self.nodes.append(helper.make_node("Identity", [out], [OUTPUT_NAME], name="output"))
        graph = helper.make_graph(
            self.nodes,
            MODEL_NAME,
            [helper.make_tensor_value_info(INPUT_NAME, self.TensorProto.FLOAT, list(INPUT_SHAPE))],
            [
                helper.make_tensor_value_info(
                    OUTPUT_NAME, self.TensorProto.FLOAT, list(OUTPUT_SHAPE)
                )
            ],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="darkroom export_detector",
            producer_version=str(CONVERTER_VERSION),
        )
        model.ir_version = IR_VERSION
        return model

    # -- ops

    def op_Placeholder(self, node: dict) -> None:
        dims = [int(d["size"]) for d in node["attr"]["shape"]["shape"]["dim"]]
        if node["name"] != TF_INPUT or tuple(dims) != INPUT_SHAPE:
            raise ExportError(f"unexpected input {node['name']} {dims}")
        self._names.add(INPUT_NAME)
        self.values[f"{node['name']}:0"] = _Value(INPUT_NAME, False)

    def _conv(self, node: dict, depthwise: bool) -> None:
        inputs = self.data_inputs(node)
        if _str(node, "data_format") != "NHWC" or _ints(node, "explicit_paddings"):
            raise ExportError(f"{node['name']}: only NHWC without explicit paddings")
        strides, dilations = _ints(node, "strides"), _ints(node, "dilations") or [1, 1, 1, 1]
        if strides[0] != 1 or strides[3] != 1 or dilations[0] != 1 or dilations[3] != 1:
            raise ExportError(f"{node['name']}: strides/dilations over batch or channels")
        padding = _str(node, "padding")
        if padding not in ("SAME", "VALID"):
            raise ExportError(f"{node['name']}: padding {padding}")
        weights, fp16 = self.const(inputs[1])
        kh, kw, cin, cout = weights.shape
        if depthwise:  # [H, W, C, multiplier] -> [C * multiplier, 1, H, W], one group per channel
            w = weights.transpose(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw)
            group = cin
        else:  # HWIO -> OIHW
            w = weights.transpose(3, 2, 0, 1)
            group = 1
        conv_inputs = [self.nchw(inputs[0]), self.initializer(w, inputs[1], fp16)]
        fused = _strs(node, "fused_ops")
        activation = None
        if node["op"].startswith("_Fused") or node["op"].startswith("Fused"):
            if _int(node, "num_args") != 1 or not fused or fused[0] != "BiasAdd" or len(fused) > 2:
                raise ExportError(f"{node['name']}: fused ops {fused}")
            bias, bias16 = self.const(inputs[2])
            conv_inputs.append(self.initializer(bias.reshape(-1), inputs[2], bias16))
            activation = fused[1] if len(fused) == 2 else None
        elif len(inputs) != 2:
            raise ExportError(f"{node['name']}: {len(inputs)} inputs")
        attrs: dict[str, Any] = {
            "kernel_shape": [kh, kw],
            "strides": strides[1:3],
            "dilations": dilations[1:3],
            "group": group,
        }
        if padding == "SAME":
            attrs["auto_pad"] = "SAME_UPPER"  # TensorFlow puts the odd padding at the end
        else:
            attrs["pads"] = [0, 0, 0, 0]
        hint = node["name"] if activation is None else f"{node['name']}/conv"
        out = self.emit("Conv", conv_inputs, hint, **attrs)
        if activation == "Relu":
            out = self.emit("Relu", out, node["name"])
        elif activation == "Relu6":
            out = self._relu6(out[0], node["name"])
        elif activation is not None:
            raise ExportError(f"{node['name']}: fused activation {activation}")
        self.set(node, out, nchw=True)

    def op_FusedConv2D(self, node: dict) -> None:
        self._conv(node, depthwise=False)

    def op_Conv2D(self, node: dict) -> None:
        self._conv(node, depthwise=False)

    def op_FusedDepthwiseConv2dNative(self, node: dict) -> None:
        self._conv(node, depthwise=True)

    def op_DepthwiseConv2dNative(self, node: dict) -> None:
        self._conv(node, depthwise=True)

    def _relu6(self, x: str, hint: str) -> list[str]:
        low = self.initializer(np.array(0, np.float32), f"{hint}/min")
        high = self.initializer(np.array(6, np.float32), f"{hint}/max")
        return self.emit("Clip", [x, low, high], hint)

    def op_Relu6(self, node: dict) -> None:
        (x,) = self.data_inputs(node)
        value = self.value(x)
        self.set(node, self._relu6(value.name, node["name"]), value.nchw)

    def _unary(self, node: dict, op: str) -> None:
        (x,) = self.data_inputs(node)
        value = self.value(x)
        self.set(node, self.emit(op, [value.name], node["name"]), value.nchw)

    def op_Relu(self, node: dict) -> None:
        self._unary(node, "Relu")

    def op_Sigmoid(self, node: dict) -> None:
        self._unary(node, "Sigmoid")

    def op_Identity(self, node: dict) -> None:
        (x,) = self.data_inputs(node)
        self.values[f"{node['name']}:0"] = self.value(x)

    def _operands(self, node: dict) -> tuple[list[str], bool]:
        """Two operands in one layout; a constant is laid out to broadcast like the other."""
        a, b = self.data_inputs(node)
        const_a, const_b = self.is_const(a), self.is_const(b)
        if const_a and const_b:
            raise ExportError(f"{node['name']}: two constant operands")
        if const_a or const_b:
            x, c = (b, a) if const_a else (a, b)
            value = self.value(x)
            array, fp16 = self.const(c)
            if value.nchw and array.size > 1:  # broadcast over NHWC's last axis -> NCHW's second
                if array.ndim > 4:
                    raise ExportError(f"{node['name']}: constant of rank {array.ndim}")
                array = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(NHWC_TO_NCHW)
            name = self.initializer(array, c.split(":")[0], fp16)
            return ([name, value.name] if const_a else [value.name, name]), value.nchw
        va, vb = self.value(a), self.value(b)
        if va.nchw == vb.nchw:
            return [va.name, vb.name], va.nchw
        raise ExportError(f"{node['name']}: operands in different layouts")

    def _binary(self, node: dict, op: str) -> None:
        inputs, nchw = self._operands(node)
        self.set(node, self.emit(op, inputs, node["name"]), nchw)

    def op_Add(self, node: dict) -> None:
        self._binary(node, "Add")

    def op_AddV2(self, node: dict) -> None:
        self._binary(node, "Add")

    def op_Sub(self, node: dict) -> None:
        self._binary(node, "Sub")

    def op_Mul(self, node: dict) -> None:
        self._binary(node, "Mul")

    def op_Equal(self, node: dict) -> None:
        self._binary(node, "Equal")

    def _integer(self, node: dict) -> None:
        if _type(node, "T") != "DT_INT32":
            raise ExportError(f"{node['name']}: {node['op']} on {_type(node, 'T')}")

    def op_FloorMod(self, node: dict) -> None:
        self._integer(node)
        inputs, nchw = self._operands(node)
        self.set(node, self.emit("Mod", inputs, node["name"], fmod=0), nchw)  # sign of divisor

    def op_FloorDiv(self, node: dict) -> None:
        self._integer(node)
        (a, b), nchw = self._operands(node)
        mod = self.emit("Mod", [a, b], f"{node['name']}/mod", fmod=0)
        exact = self.emit("Sub", [a, mod[0]], f"{node['name']}/sub")  # a multiple of b
        self.set(node, self.emit("Div", [exact[0], b], node["name"]), nchw)

    def op_Cast(self, node: dict) -> None:
        (x,) = self.data_inputs(node)
        types = {"DT_FLOAT": self.TensorProto.FLOAT, "DT_INT32": self.TensorProto.INT32}
        target = _type(node, "DstT")
        if target not in types:
            raise ExportError(f"{node['name']}: Cast to {target}")
        value = self.value(x)
        self.set(node, self.emit("Cast", [value.name], node["name"], to=types[target]), value.nchw)

    def op_Mean(self, node: dict) -> None:
        x, axes_input = self.data_inputs(node)
        value = self.value(x)
        axes = [a % 4 if value.nchw else a for a in self.const_ints(axes_input)]
        keep = _bool(node, "keep_dims")
        if value.nchw:
            if not keep:
                raise ExportError(f"{node['name']}: Mean without keep_dims on a 4-D activation")
            axes = [NCHW_AXIS[a] for a in axes]
        out = self.emit(
            "ReduceMean", [value.name, self.int64(axes, f"{node['name']}/axes")], node["name"],
            keepdims=int(keep),
        )  # fmt: skip
        self.set(node, out, value.nchw)

    def op_ConcatV2(self, node: dict) -> None:
        *parts, axis_input = self.data_inputs(node)
        (axis,) = self.const_ints(axis_input)
        nchw = any(self.value(p).nchw for p in parts)
        if nchw:
            names = [self.nchw(p) for p in parts]
            axis = NCHW_AXIS[axis % 4]
        else:
            names = [self.tf(p) for p in parts]
        self.set(node, self.emit("Concat", names, node["name"], axis=axis), nchw)

    def op_ResizeBilinear(self, node: dict) -> None:
        x, size_input = self.data_inputs(node)
        if _bool(node, "align_corners"):
            mode = "align_corners"
        elif _bool(node, "half_pixel_centers"):
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        sizes = self.int64(self.const_ints(size_input), f"{node['name']}/sizes")
        out = self.emit(
            "Resize", [self.nchw(x), "", "", sizes], node["name"],
            mode="linear", coordinate_transformation_mode=mode, axes=[2, 3],
        )  # fmt: skip
        self.set(node, out, nchw=True)

    def op_MaxPool(self, node: dict) -> None:
        (x,) = self.data_inputs(node)
        ksize, strides = _ints(node, "ksize"), _ints(node, "strides")
        if _str(node, "data_format") != "NHWC" or ksize[0] != 1 or ksize[3] != 1:
            raise ExportError(f"{node['name']}: MaxPool {ksize} {_str(node, 'data_format')}")
        padding = _str(node, "padding")
        attrs: dict[str, Any] = {"kernel_shape": ksize[1:3], "strides": strides[1:3]}
        if padding == "SAME":
            attrs["auto_pad"] = "SAME_UPPER"  # padded cells never win: as TensorFlow
        elif padding == "VALID":
            attrs["pads"] = [0, 0, 0, 0]
        else:
            raise ExportError(f"{node['name']}: padding {padding}")
        self.set(node, self.emit("MaxPool", [self.nchw(x)], node["name"], **attrs), nchw=True)

    def op_Reshape(self, node: dict) -> None:
        x, shape_input = self.data_inputs(node)
        shape = self.int64(self.const_ints(shape_input), f"{node['name']}/shape")
        self.set(node, self.emit("Reshape", [self.tf(x), shape], node["name"]), nchw=False)

    def op_ExpandDims(self, node: dict) -> None:
        x, dim_input = self.data_inputs(node)
        axes = self.int64(self.const_ints(dim_input), f"{node['name']}/axes")
        self.set(node, self.emit("Unsqueeze", [self.tf(x), axes], node["name"]), nchw=False)

    def op_TopKV2(self, node: dict) -> None:
        x, k_input = self.data_inputs(node)
        if not _bool(node, "sorted"):
            raise ExportError(f"{node['name']}: unsorted TopKV2")
        k = self.int64(self.const_ints(k_input), f"{node['name']}/k")
        values, indices = self.emit(
            "TopK", [self.tf(x), k], node["name"], outputs=2, axis=-1, largest=1, sorted=1
        )  # equal values: the lower index first, as TensorFlow
        indices32 = self.emit("Cast", [indices], f"{node['name']}/int32", to=self.TensorProto.INT32)
        self.set(node, [values, indices32[0]], nchw=False)

    def op_GatherV2(self, node: dict) -> None:
        params, indices, axis_input = self.data_inputs(node)
        if _int(node, "batch_dims") != 0:
            raise ExportError(f"{node['name']}: batch_dims {_int(node, 'batch_dims')}")
        (axis,) = self.const_ints(axis_input)
        out = self.emit("Gather", [self.tf(params), self.tf(indices)], node["name"], axis=axis)
        self.set(node, out, nchw=False)

    def op_StridedSlice(self, node: dict) -> None:
        x, begin_input, end_input, strides_input = self.data_inputs(node)
        if _int(node, "ellipsis_mask") or _int(node, "new_axis_mask"):
            raise ExportError(f"{node['name']}: ellipsis or new-axis mask")
        begin, end = self.const_ints(begin_input), self.const_ints(end_input)
        steps = self.const_ints(strides_input)
        if any(s <= 0 for s in steps):
            raise ExportError(f"{node['name']}: negative strides")
        begin_mask, end_mask = _int(node, "begin_mask"), _int(node, "end_mask")
        shrink = _int(node, "shrink_axis_mask")
        starts, ends = [], []
        for axis in range(len(begin)):
            start = 0 if begin_mask >> axis & 1 else begin[axis]
            stop = INT64_MAX if end_mask >> axis & 1 else end[axis]
            if shrink >> axis & 1:
                stop = start + 1
            starts.append(start)
            ends.append(stop)
        name = node["name"]
        out = self.emit(
            "Slice",
            [
                self.tf(x),
                self.int64(starts, f"{name}/starts"),
                self.int64(ends, f"{name}/ends"),
                self.int64(list(range(len(begin))), f"{name}/axes"),
                self.int64(steps, f"{name}/steps"),
            ],
            name if not shrink else f"{name}/slice",
        )
        squeezed = [a for a in range(len(begin)) if shrink >> a & 1]
        if squeezed:
            out = self.emit("Squeeze", [out[0], self.int64(squeezed, f"{name}/squeeze")], name)
        self.set(node, out, nchw=False)


def convert(graph: TfjsGraph):
    """The tfjs graph as an ONNX model (onnx.ModelProto), checked by onnx's checker."""
    import onnx

    model = _Converter(graph).convert()
    onnx.checker.check_model(model, full_check=True)
    return model


# ----------------------------------------------------------------------------- the check


def check_canvases() -> Iterator[tuple[str, np.ndarray]]:
    for name in CHECK_IMAGES:
        with Image.open(PROJECT_ROOT / name) as image:
            yield name, letterbox(np.asarray(image.convert("RGB")))[0]


def canvas_sha256(canvas: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(canvas).tobytes()).hexdigest()


def _unmatched(ours: np.ndarray, theirs: np.ndarray) -> tuple[list, float, float]:
    """Rows of `ours` (score >= CHECK_MIN_SCORE) without a counterpart in `theirs`, and the
    largest score and box differences over the matched ones."""
    missing, score_diff, box_diff = [], 0.0, 0.0
    for row in ours[ours[:, 4] >= CHECK_MIN_SCORE]:
        same = theirs[theirs[:, 5] == row[5]]
        if not len(same):
            missing.append(row)
            continue
        boxes = np.abs(same[:, :4] - row[:4]).max(axis=1)
        scores = np.abs(same[:, 4] - row[4])
        best = int(np.argmin(boxes + scores * 1000))
        if boxes[best] > MAX_BOX_DIFF or scores[best] > MAX_SCORE_DIFF:
            missing.append(row)
            continue
        score_diff, box_diff = (
            max(score_diff, float(scores[best])),
            max(box_diff, float(boxes[best])),
        )
    return missing, score_diff, box_diff


def check(model_path: Path) -> dict:
    """The ONNX model on onnxruntime against the recorded TensorFlow.js outputs."""
    import onnxruntime as ort

    reference = json.loads(REFERENCE.read_text("utf-8"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    recorded = {entry["image"]: entry for entry in reference["canvases"]}
    figures = {"images": [], "max_score_diff": 0.0, "max_box_diff_px": 0.0, "compared": 0}
    for name, canvas in check_canvases():
        entry = recorded.get(name)
        if entry is None:
            raise ExportError(f"{REFERENCE.name} has no entry for {name}: record it again")
        x = canvas.astype(np.float32)[np.newaxis]
        ours = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][0].astype(np.float64)
        theirs = np.asarray(entry["detections"], np.float64)
        if ours.shape != theirs.shape:
            raise ExportError(f"{name}: detections {ours.shape}, tfjs {theirs.shape}")
        extra, s1, b1 = _unmatched(ours, theirs)
        lost, s2, b2 = _unmatched(theirs, ours)
        if extra or lost:
            same_input = canvas_sha256(canvas) == entry["canvas_sha256"]
            raise ExportError(
                f"check on {name} failed: {len(lost)} tfjs detection(s) not reproduced "
                f"(first: {lost[0].round(3).tolist() if lost else None}), {len(extra)} not in "
                f"tfjs (first: {extra[0].round(3).tolist() if extra else None}); score within "
                f"{MAX_SCORE_DIFF}, box within {MAX_BOX_DIFF} px"
                + ("" if same_input else "; NB: the canvas differs from the recorded one")
            )
        figures["images"].append(name)
        figures["compared"] += int((theirs[:, 4] >= CHECK_MIN_SCORE).sum())
        figures["max_score_diff"] = max(figures["max_score_diff"], s1, s2)
        figures["max_box_diff_px"] = max(figures["max_box_diff_px"], b1, b2)
    figures["tfjs"] = reference.get("tfjs")
    return figures


# ----------------------------------------------------------------------------- writing


def export(out: Path, wanted: dict[str, Any], source_dir: Path = SOURCE_DIR) -> dict:
    """Convert, check and write `out` and its sidecar; returns the sidecar."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the check needs it)
    except ImportError as exc:
        raise ExportError(f"{exc.name or exc} is not installed: {INSTALL_HINT}") from exc
    graph = read_tfjs(source_dir / SOURCE_FILES[0])
    model = convert(graph)
    out.parent.mkdir(parents=True, exist_ok=True)
    with temporary_file(out.parent, ".onnx") as tmp_model:
        onnx.save_model(model, str(tmp_model))
        figures = check(tmp_model)
        record = {
            "model": MODEL_NAME,
            "source": wanted,
            "onnx": metadata.version("onnx"),
            "opset": OPSET,
            "input": {
                "name": INPUT_NAME,
                "dtype": "float32",
                "shape": list(INPUT_SHAPE),
                "layout": "NHWC RGB 0..255, letterboxed (black) to 512x512",
            },
            "output": {
                "name": OUTPUT_NAME,
                "shape": list(OUTPUT_SHAPE),
                "columns": "x1, y1, x2, y2 (input pixels), score, class",
            },
            "labels": "COCO's 80 detection classes",
            "check": figures,
        }
        return publish_model(tmp_model, out, record)


def record_reference(node: str = "node") -> None:
    """Run the tfjs graph model itself on the check canvases and write REFERENCE."""
    canvases = list(check_canvases())
    try:
        done = subprocess.run(
            [node, str(REFERENCE_SCRIPT)],
            input=b"".join(np.ascontiguousarray(c).tobytes() for _, c in canvases),
            capture_output=True,
            check=False,
            timeout=300,
        )
    except OSError as exc:
        raise ExportError(f"cannot run Node.js ({node}): {exc}") from exc
    if done.returncode != 0:
        raise ExportError(
            f"{REFERENCE_SCRIPT.name} failed: {done.stderr.decode(errors='replace')[-2000:]}\n"
            "It needs TensorFlow.js: npm install --no-save @tensorflow/tfjs-core@4.22.0 "
            "@tensorflow/tfjs-converter@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0"
        )
    result = json.loads(done.stdout)
    reference = {
        "about": (
            "tower_0/detections of the CenterNet tfjs graph model (npm @vladmandic/human "
            "models/centernet.*) computed by TensorFlow.js on the check canvases: the reference "
            "the ONNX conversion is checked against. Written by python -m "
            "local.export_detector --record-reference."
        ),
        "package": SOURCE_PACKAGE,
        "version": source_version(),
        "tfjs": f"{result['tfjs']} ({result['backend']})",
        "columns": "x1, y1, x2, y2 (canvas pixels), score, class (0-based COCO: "
        f"{LABELS[0]}, {LABELS[1]}, ...)",
        "canvases": [
            {
                "image": name,
                "canvas_sha256": canvas_sha256(canvas),
                "detections": [[round(float(v), 5) for v in row] for row in rows],
            }
            for (name, canvas), rows in zip(canvases, result["detections"], strict=True)
        ],
    }
    REFERENCE.write_text(json.dumps(reference, separators=(",", ":")) + "\n", "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local.export_detector",
        description="Convert CenterNet (tfjs graph model, npm @vladmandic/human) to ONNX.",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_MODEL_PATH, help=f"default: {DEFAULT_MODEL_PATH}"
    )
    parser.add_argument("--force", action="store_true", help="convert even if up to date")
    parser.add_argument(
        "--record-reference",
        action="store_true",
        help=f"run TensorFlow.js on the check canvases and write {REFERENCE.name}",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if args.record_reference:
        try:
            record_reference()
        except ExportError as exc:
            log(str(exc))
            return 1
        log(f"wrote {REFERENCE}")
        return 0
    try:
        wanted = sources()
    except ExportError as exc:
        log(f"cannot convert {out}: {exc}")
        return 2
    if not args.force and up_to_date(out, wanted):
        log(f"up to date: {out}")
        return 0
    started = time.perf_counter()
    try:
        sidecar = export(out, wanted)
    except ExportError as exc:
        log(str(exc))
        return 1
    figures = sidecar["check"]
    log(
        f"converted {out} ({sidecar['bytes'] / 1e6:.1f} MB, sha256 {sidecar['sha256'][:12]}…) "
        f"in {time.perf_counter() - started:.1f} s; against tfjs on {len(figures['images'])} "
        f"images ({figures['compared']} detections): max |score difference| "
        f"{figures['max_score_diff']:.2g}, max box difference {figures['max_box_diff_px']:.2g} px"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
