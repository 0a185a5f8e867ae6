"""Where a model step's model runs: a tensor source (in-process onnxruntime, or a server speaking
the Open Inference Protocol v2) takes the tensor the step prepared and gives the output
tensors; both describe their tensors (`ModelInfo`) so the step can check its settings against
the model before any image flows.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from pipeline.vision.base import ModelUnavailable
from pipeline.vision.local.onnx_session import cpu_session, file_sha256
from pipeline.vision.model_step.spec import ModelStepSpec

# ONNX element types as onnxruntime names them → numpy.
ORT_TYPES: Mapping[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...]  # None: a dynamic dimension
    dtype: str  # numpy's name


@dataclass(frozen=True)
class ModelInfo:
    identity: str  # `name@version`, or `sha256:<first 16 hex>` of the model file
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)


class TensorSource(Protocol):
    def info(self) -> ModelInfo:
        """The model's tensors and metadata (ModelUnavailable if it cannot be reached/read)."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Output tensors by name for one batch."""


def labels_from_metadata(metadata: Mapping[str, str]) -> tuple[str, ...] | None:
    """Class names a model carries: an Ultralytics export's `names` (`{0: 'person', …}`), or a
    `labels` entry (comma list)."""
    if raw := metadata.get("names"):
        try:
            names = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            names = None
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            return tuple(str(names[i]) for i in sorted(names))
        if isinstance(names, list | tuple):
            return tuple(str(n) for n in names)
    if raw := metadata.get("labels"):
        return tuple(label.strip() for label in raw.split(",") if label.strip())
    return None


def size_from_metadata(metadata: Mapping[str, str]) -> tuple[int, int] | None:
    """An Ultralytics export's `imgsz` (`[640, 640]`, height first) as (width, height)."""
    try:
        value = ast.literal_eval(metadata.get("imgsz", ""))
    except (ValueError, SyntaxError):
        return None
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return int(value[1]), int(value[0])
    return None


@dataclass(frozen=True)
class RemoteFile:
    """A model file in Blob Storage, fetched on first use (pipeline.stores.model_files)."""

    url: str
    sha256: str

    def local(self) -> Path:
        from pipeline.stores.azure_clients import clients
        from pipeline.stores.model_files import ModelFileError, fetch_model

        try:
            return fetch_model(clients(), self.url, self.sha256)
        except ModelFileError as exc:
            raise ModelUnavailable(str(exc)) from exc


class OnnxSource:
    """An ONNX file run in-process on onnxruntime (CPU, the pipeline's thread budget)."""

    def __init__(self, path: Path | RemoteFile, sha256: str | None = None) -> None:
        self.where = path
        self.sha256 = sha256
        self.path = path if isinstance(path, Path) else Path(urlsplit(path.url).path)
        self.name = self.path.stem  # the identity names the file as the settings do
        self._session = None
        self._lock = threading.Lock()

    def _open(self):
        with self._lock:
            if self._session is None:
                if isinstance(self.where, RemoteFile):
                    self.path = self.where.local()  # fetched once, checked against its pin
                if not self.path.is_file():
                    raise ModelUnavailable(f"no model file at {self.path}")
                if self.sha256 and (actual := file_sha256(self.path)) != self.sha256:
                    raise ModelUnavailable(
                        f"{self.path.name} has sha256 {actual}, not the pinned {self.sha256}"
                    )
                try:
                    self._session = cpu_session(self.path)
                except Exception as exc:  # onnxruntime's own errors: a file that is no model
                    raise ModelUnavailable(
                        f"onnxruntime cannot load {self.path.name}: {exc}"
                    ) from exc
            return self._session

    def info(self) -> ModelInfo:
        session = self._open()

        def tensors(items) -> tuple[TensorInfo, ...]:
            return tuple(
                TensorInfo(
                    t.name,
                    tuple(d if isinstance(d, int) and d > 0 else None for d in t.shape),
                    ORT_TYPES.get(t.type, t.type),
                )
                for t in items
            )

        meta = session.get_modelmeta()
        digest = self.sha256 or file_sha256(self.path)
        return ModelInfo(
            identity=f"{self.name}@sha256:{digest[:16]}",
            inputs=tensors(session.get_inputs()),
            outputs=tensors(session.get_outputs()),
            metadata=dict(meta.custom_metadata_map),
        )

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._open()
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def tensor_source(spec: ModelStepSpec, root: Path) -> TensorSource:
    """The source a spec names (an ONNX path relative to the app root, or a model server)."""
    if spec.source == "onnx" and spec.onnx and spec.onnx.startswith(("https://", "http://")):
        return OnnxSource(RemoteFile(spec.onnx, spec.sha256 or ""), spec.sha256)
    if spec.source == "onnx" and spec.onnx:
        path = Path(spec.onnx)
        return OnnxSource(path if path.is_absolute() else root / path, spec.sha256)
    if spec.source == "oip":
        return OipSource(spec)
    raise ModelUnavailable(f"model step {spec.name}: the {spec.source} source is not built yet")


# Open Inference Protocol v2 datatypes → numpy (the KServe/Triton names).
OIP_TYPES: Mapping[str, str] = {
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}
NUMPY_OIP = {numpy: oip for oip, numpy in OIP_TYPES.items()}


class OipSource:
    """A model behind a server speaking the Open Inference Protocol v2 (Triton, KServe,
    Seldon MLServer, Azure ML's no-code Triton deployments): `GET /v2/models/{m}` for its
    tensors, `POST /v2/models/{m}/infer` with the tensor as JSON."""

    def __init__(self, spec: ModelStepSpec) -> None:
        from pipeline.vision.model_step.remote import RemoteModel

        assert spec.oip_url and spec.oip_model
        self.spec = spec
        self.remote = RemoteModel(spec.oip_url, spec.timeout_ms, spec.concurrency)
        version = f"/versions/{spec.oip_version}" if spec.oip_version else ""
        self.path = f"/v2/models/{spec.oip_model}{version}"

    def info(self) -> ModelInfo:
        from azure.core.rest import HttpRequest

        what = f"metadata of {self.spec.oip_model}"
        meta = self.remote.json(HttpRequest("GET", self.path), what)
        if not isinstance(meta, dict):
            raise ModelUnavailable(f"the metadata of {self.spec.oip_model} is not a JSON object")

        def tensors(items: Any) -> tuple[TensorInfo, ...]:
            found = []
            for t in items or []:
                shape = tuple(d if isinstance(d, int) and d > 0 else None for d in t["shape"])
                found.append(
                    TensorInfo(t["name"], shape, OIP_TYPES.get(t["datatype"], t["datatype"]))
                )
            return tuple(found)

        versions = meta.get("versions") or []
        version = self.spec.oip_version or (versions[-1] if versions else None)
        parameters = meta.get("parameters") or {}
        return ModelInfo(
            identity=f"{meta.get('name', self.spec.oip_model)}@{version or 'latest'}",
            inputs=tensors(meta.get("inputs")),
            outputs=tensors(meta.get("outputs")),
            metadata={k: str(v) for k, v in parameters.items() if isinstance(v, str | int | float)},
        )

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from azure.core.rest import HttpRequest

        body = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(tensor.shape),
                    "datatype": NUMPY_OIP.get(tensor.dtype.name, "FP32"),
                    "data": tensor.ravel().tolist(),
                }
                for name, tensor in inputs.items()
            ]
        }
        answer = self.remote.json(
            HttpRequest("POST", f"{self.path}/infer", json=body),
            f"inference on {self.spec.oip_model}",
        )
        outputs = {}
        for item in (answer or {}).get("outputs") or []:
            try:
                dtype = OIP_TYPES.get(item.get("datatype", "FP32"), "float32")
                outputs[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
            except (KeyError, TypeError, ValueError) as exc:
                from pipeline.vision.model_step.decoders import MalformedOutput

                raise MalformedOutput(f"output {item.get('name')!r} does not read: {exc}") from exc
        return outputs
