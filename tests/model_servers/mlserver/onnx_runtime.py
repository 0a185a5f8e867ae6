"""An MLServer custom runtime serving one ONNX file with onnxruntime (CPU).

MLServer 1.7.1 has no ONNX runtime of its own; this is the smallest one that speaks the Open
Inference Protocol v2 as Triton does for ONNX: `GET /v2/models/{name}` lists the model's input
and output tensors (dynamic dimensions as -1) and, as `parameters`, the ONNX file's own metadata
(an Ultralytics export's `names` and `imgsz`), so a model step configured against the server
learns what it would learn from the file; `POST /v2/models/{name}/infer` runs the session on the
tensors sent (row-major data, shape and datatype); an input onnxruntime refuses (wrong shape,
name or type) is a 400 with onnxruntime's words, not a 500.

Runs inside the MLServer venv only (tests/servers.py copies it into the model repository).
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    MetadataTensor,
    Parameters,
)
from mlserver.utils import get_model_uri

DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(double)": "FP64",
    "tensor(uint8)": "UINT8",
    "tensor(int8)": "INT8",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(bool)": "BOOL",
}


def _tensors(items) -> list[MetadataTensor]:
    return [
        MetadataTensor(
            name=item.name,
            datatype=DATATYPES.get(item.type, "BYTES"),
            shape=[d if isinstance(d, int) and d > 0 else -1 for d in item.shape],
        )
        for item in items
    ]


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the tests' machine has 2 cores, shared
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = _tensors(self._session.get_inputs())
        self.outputs = _tensors(self._session.get_outputs())
        self._metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        return True

    async def metadata(self) -> MetadataModelResponse:
        answer = await super().metadata()
        answer.parameters = Parameters(**self._metadata)
        return answer

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {item.name: NumpyCodec.decode_input(item) for item in payload.inputs}
        wanted = [o.name for o in payload.outputs or []] or [
            o.name for o in self._session.get_outputs()
        ]
        try:
            results = self._session.run(wanted, feeds)
        except Exception as exc:  # onnxruntime's refusal of what was sent: the caller's fault
            message = f"onnxruntime: {exc}".splitlines()[0][:500]
            raise MLServerError(message, status_code=400) from exc
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name=name, payload=np.ascontiguousarray(value))
                for name, value in zip(wanted, results, strict=True)
            ],
        )
