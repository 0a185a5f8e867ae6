"""Model services that take the image itself, not a tensor: an Azure Machine Learning online
endpoint (the AutoML-for-images contract) and an Azure Custom Vision prediction URL. They do
their own pre- and post-processing; what comes back is mapped to the step's result.

- Azure ML: `POST <scoring URI>` with `{"input_data": {"columns": ["image"], "index": [0],
  "data": ["<base64>"]}}`; a classifier answers `[{"probs": [...], "labels": [...]}]`, a
  detector `[{"boxes": [{"box": {"topX", "topY", "bottomX", "bottomY"}, "label", "score"}]}]`
  with corners normalised to [0, 1]. Auth: an Entra token for `https://ml.azure.com` from the
  app's identity (the endpoint's scoring permission), or `AZUREML_KEY` as a bearer key;
  `AZUREML_DEPLOYMENT` goes in `azureml-model-deployment` to pick a deployment.
- Custom Vision: `POST <prediction URL>` with the image bytes and `Prediction-Key`; it answers
  `{"predictions": [{"probability", "tagName", "boundingBox": {"left", "top", "width",
  "height"}}]}`, boxes normalised.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

from azure.core.rest import HttpRequest

from pipeline.vision.model_step.decoders import MalformedOutput
from pipeline.vision.model_step.remote import RemoteModel
from pipeline.vision.model_step.spec import ModelStepSpec

AZUREML_SCOPE = "https://ml.azure.com/.default"


@dataclass(frozen=True)
class ImageAnswer:
    """Labels (best first) or objects with [x, y, w, h] boxes in the sent image's pixels."""

    labels: list[tuple[str, float]] | None = None
    objects: list[tuple[str, float, list[float]]] | None = None


class ImageSource(Protocol):
    identity: str

    def predict_image(self, jpeg: bytes, width: int, height: int) -> ImageAnswer: ...


def _score(value: Any, what: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError) as exc:
        raise MalformedOutput(f"{what} is not a number: {value!r}") from exc
    if not 0.0 <= score <= 1.0:
        raise MalformedOutput(f"{what} {score} is not in [0, 1]")
    return score


def _box(left: Any, top: Any, right: Any, bottom: Any, width: int, height: int) -> list[float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in (left, top, right, bottom))
    except (TypeError, ValueError) as exc:
        raise MalformedOutput(f"a box corner is not a number: {exc}") from exc
    if not all(-0.01 <= v <= 1.01 for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
        raise MalformedOutput(f"a box ({x1}, {y1}, {x2}, {y2}) is not normalised corners")
    return [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]


def _ranked(labels: list[tuple[str, float]], spec: ModelStepSpec) -> list[tuple[str, float]]:
    kept = [(n, s) for n, s in labels if s >= spec.output.min_score]
    return sorted(kept, key=lambda item: -item[1])[: spec.output.top_k]


class AzureMLSource:
    def __init__(self, spec: ModelStepSpec, credential: Any = None) -> None:
        assert spec.azureml_url
        self.spec = spec
        headers = {}
        if spec.azureml_deployment:
            headers["azureml-model-deployment"] = spec.azureml_deployment
        if spec.azureml_key:
            headers["Authorization"] = f"Bearer {spec.azureml_key}"
            credential = None
        self.remote = RemoteModel(
            spec.azureml_url,
            spec.timeout_ms,
            spec.concurrency,
            headers=headers,
            credential=credential,
            scope=AZUREML_SCOPE if credential is not None else None,
        )
        self.identity = f"azureml:{spec.azureml_deployment or 'default'}@{spec.azureml_url}"

    def predict_image(self, jpeg: bytes, width: int, height: int) -> ImageAnswer:
        body = {
            "input_data": {
                "columns": ["image"],
                "index": [0],
                "data": [base64.b64encode(jpeg).decode("ascii")],
            }
        }
        answer = self.remote.json(HttpRequest("POST", "", json=body), "the Azure ML endpoint")
        if isinstance(answer, str):  # some scoring scripts return their JSON as a string
            import json

            try:
                answer = json.loads(answer)
            except ValueError as exc:
                raise MalformedOutput("the endpoint's answer is a string, not JSON") from exc
        if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], dict):
            raise MalformedOutput("the endpoint must answer a list with one result per image")
        result = answer[0]
        if self.spec.task == "classify":
            probs, names = result.get("probs"), result.get("labels")
            if (
                not isinstance(probs, list)
                or not isinstance(names, list)
                or len(probs) != len(names)
            ):
                raise MalformedOutput(
                    "a classifier's answer needs `probs` and `labels` of one length"
                )
            labels = [
                (str(n), _score(p, f"the score of {n}")) for n, p in zip(names, probs, strict=True)
            ]
            return ImageAnswer(labels=_ranked(labels, self.spec))
        boxes = result.get("boxes")
        if not isinstance(boxes, list):
            raise MalformedOutput("a detector's answer needs `boxes`")
        objects = []
        for item in boxes:
            box = item.get("box") if isinstance(item, dict) else None
            if not isinstance(box, dict):
                raise MalformedOutput("each of `boxes` needs a `box`")
            score = _score(item.get("score"), "a box's score")
            if score < self.spec.output.min_score:
                continue
            xywh = _box(
                box.get("topX"),
                box.get("topY"),
                box.get("bottomX"),
                box.get("bottomY"),
                width,
                height,
            )
            objects.append((str(item.get("label")), score, xywh))
        objects.sort(key=lambda o: -o[1])
        return ImageAnswer(objects=objects[: self.spec.output.top_k])


class CustomVisionSource:
    def __init__(self, spec: ModelStepSpec) -> None:
        assert spec.customvision_url and spec.customvision_key
        self.spec = spec
        self.remote = RemoteModel(
            spec.customvision_url,
            spec.timeout_ms,
            spec.concurrency,
            headers={
                "Prediction-Key": spec.customvision_key,
                "Content-Type": "application/octet-stream",
            },
        )
        self.identity = (
            "customvision@" + spec.customvision_url.split("/iterations/")[-1].split("/")[0]
        )

    def predict_image(self, jpeg: bytes, width: int, height: int) -> ImageAnswer:
        answer = self.remote.json(HttpRequest("POST", "", content=jpeg), "Custom Vision")
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list):
            raise MalformedOutput("Custom Vision's answer has no `predictions`")
        if self.spec.task == "classify":
            labels = [
                (str(p.get("tagName")), _score(p.get("probability"), "a probability"))
                for p in predictions
            ]
            return ImageAnswer(labels=_ranked(labels, self.spec))
        objects = []
        for p in predictions:
            box = p.get("boundingBox")
            if not isinstance(box, dict):
                raise MalformedOutput("a detection has no `boundingBox`")
            score = _score(p.get("probability"), "a probability")
            if score < self.spec.output.min_score:
                continue
            left, top = box.get("left"), box.get("top")
            try:
                right, bottom = float(left) + float(box["width"]), float(top) + float(box["height"])
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedOutput(f"a boundingBox does not read: {exc}") from exc
            objects.append(
                (str(p.get("tagName")), score, _box(left, top, right, bottom, width, height))
            )
        objects.sort(key=lambda o: -o[1])
        return ImageAnswer(objects=objects[: self.spec.output.top_k])
