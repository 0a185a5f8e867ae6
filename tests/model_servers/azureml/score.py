"""An Azure ML online-endpoint scoring script (`init()` / `run()`) that speaks the AutoML-for-
images contract, serving an ONNX classifier or detector with onnxruntime.

    in:  {"input_data": {"columns": ["image"], "index": [0], "data": ["<base64 image>", ...]}}
         (a row may also be ["<base64>"], the pandas "split" form)
    out: classify → [{"filename", "probs": [...], "labels": [...]}] (every class)
         detect   → [{"filename", "boxes": [{"box": {"topX", "topY", "bottomX", "bottomY"},
                      "label", "score"}]}] (corners as fractions of the image sent)

The model folder (AZUREML_MODEL_DIR) holds `model.onnx` and `config.json`: the task, the input
as a model step's settings would give it (size, resize, interpolation, layout, colour, scale,
mean, std), the labels and, for a detector, the decoder with its min_score, iou and top_k.

So that this endpoint computes what the model step computes in-process on the same pixels, it
uses the project's own `pipeline/vision/model_step/preprocess.py` and `decoders.py` (numpy and
Pillow only, installed in the server's venv with the project's versions): the project root
(DARKROOM_PROJECT_ROOT, else three folders up) is put on sys.path. Nothing else of the project
is imported. Runs in the Azure ML inference server's venv only (tests/servers.py).
"""

import base64
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.environ.get("DARKROOM_PROJECT_ROOT") or str(Path(__file__).resolve().parents[3])
sys.path.insert(0, ROOT)

from pipeline.vision.model_step import decoders  # noqa: E402
from pipeline.vision.model_step.preprocess import to_tensor  # noqa: E402
from pipeline.vision.model_step.spec import InputSpec  # noqa: E402

session = None
config: dict = {}
spec: InputSpec | None = None


def init():
    global session, config, spec
    folder = Path(os.environ["AZUREML_MODEL_DIR"])
    config = json.loads((folder / "config.json").read_text())
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    given = config["input"]
    spec = InputSpec(
        size=tuple(given["size"]),
        resize=given.get("resize", "stretch"),
        interpolation=given.get("interpolation", "bilinear"),
        layout=given.get("layout", "NCHW"),
        color=given.get("color", "RGB"),
        scale=float(given.get("scale", 1 / 255)),
        mean=tuple(given.get("mean", (0.0, 0.0, 0.0))),
        std=tuple(given.get("std", (1.0, 1.0, 1.0))),
    )


def _classify(image: Image.Image) -> dict:
    tensor, _ = to_tensor(image, spec, spec.size, spec.layout, np.float32)
    raw = session.run(None, {session.get_inputs()[0].name: tensor})[0]
    probs = decoders.class_scores(raw, config.get("decoder", "softmax"))
    return {"probs": [float(p) for p in probs], "labels": list(config["labels"])}


def _detect(image: Image.Image) -> dict:
    tensor, geometry = to_tensor(image, spec, spec.size, spec.layout, np.float32)
    raw = session.run(None, {session.get_inputs()[0].name: tensor})[0]
    labels = config["labels"]
    if config.get("decoder", "yolo") == "yolo":
        found = decoders.yolo(raw, len(labels), config["min_score"], config["iou"], config["top_k"])
    else:
        found = decoders.decoded_boxes(
            raw, config["min_score"], config["iou"], config["top_k"], spec.size
        )
    boxes = []
    for d in found:
        x, y, w, h = geometry.box_to_image(d.x1, d.y1, d.x2, d.y2)
        boxes.append(
            {
                "box": {
                    "topX": x / image.width,
                    "topY": y / image.height,
                    "bottomX": (x + w) / image.width,
                    "bottomY": (y + h) / image.height,
                },
                "label": labels[d.label],
                "score": d.score,
            }
        )
    return {"boxes": boxes}


def run(raw_data):
    request = json.loads(raw_data)["input_data"]
    column = request.get("columns", ["image"]).index("image")
    index = request.get("index") or list(range(len(request["data"])))
    results = []
    for i, row in enumerate(request["data"]):
        encoded = row[column] if isinstance(row, list) else row
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as decoded:
            image = decoded.convert("RGB")
        answer = _classify(image) if config["task"] == "classify" else _detect(image)
        results.append({"filename": f"image_{index[i]}", **answer})
    return results
