"""What a model step costs: in-process against bare onnxruntime, and a slow remote model's wait.

Run: `.venv/bin/python -m bench.bench_model_step [--rounds 5] [--images 40] [--delay-ms 100]`.

1. **in-process**: the model step (settings only: EfficientNet-Lite0, the file set-up exports,
   centre crop, bicubic, (p - 127) / 128) predicting on each sample photo's analysis image,
   against the code a user would write with onnxruntime alone for the same answer (PIL crop and
   resize, numpy normalisation, `session.run`, softmax, top 3) — alternated photo by photo, in
   rounds, same process, same session options (one intra-op thread). Reported: median ms per
   image of each and their ratio (goal ≤ 1.1).
2. **remote wait**: the local stack running `prepare,species,store` where `species` is the same
   model behind an Open Inference Protocol v2 server on loopback (a small server in this
   process that runs the model and then waits `--delay-ms` before answering), once answering at
   once and once after the delay, the same photos. Reported: img/s of each and their ratio
   (goal ≥ 0.95: the wait holds no core, since the step gives its compute slot up while it
   waits).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.bench_chain import chain, make_photos
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.vision.local.onnx_session import cpu_session
from pipeline.vision.local.tags_efficientnet import load_labels
from pipeline.vision.model_step.step import model_step
from tests.harness import SAMPLES, emulator_env, running_emulators
from tests.oip_server import LoopbackOipServer

MODEL = PROJECT_ROOT / "pipeline" / "vision" / "local" / "models" / "efficientnet-lite0.onnx"
RESULTS = Path(__file__).parent / "results" / "model_step.json"


def species_settings(labels: Path, **source: str) -> dict[str, str]:
    return {
        "DARKROOM_MODEL_SPECIES__TASK": "classify",
        "DARKROOM_MODEL_SPECIES__RESIZE": "center_crop",
        "DARKROOM_MODEL_SPECIES__INTERPOLATION": "bicubic",
        "DARKROOM_MODEL_SPECIES__SCALE": "1",
        "DARKROOM_MODEL_SPECIES__MEAN": "127",
        "DARKROOM_MODEL_SPECIES__STD": "128",
        "DARKROOM_MODEL_SPECIES__LABELS": str(labels),
        "DARKROOM_MODEL_SPECIES__TOP_K": "3",
        "DARKROOM_MODEL_SPECIES__MIN_SCORE": "0",
        **{f"DARKROOM_MODEL_SPECIES__{k}": v for k, v in source.items()},
    }


def analysis_images() -> list[Image.Image]:
    images = []
    for path in sorted(SAMPLES.glob("*.jpg")):
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((1920, 1920))
            images.append(image.copy())
    return images


class BareClassifier:
    """What a user would write with onnxruntime alone for the same answer."""

    def __init__(self, labels: list[str]) -> None:
        self.session = cpu_session(MODEL)
        self.labels = labels

    def predict(self, image: Image.Image) -> list[tuple[str, float]]:
        # torchvision's evaluation: short side to 256, then the centre 224 at whole pixels
        width, height = image.size
        ratio = 256 / min(width, height)
        scaled_w, scaled_h = max(224, round(width * ratio)), max(224, round(height * ratio))
        left, top = (scaled_w - 224) // 2, (scaled_h - 224) // 2
        sx, sy = scaled_w / width, scaled_h / height
        box = (left / sx, top / sy, (left + 224) / sx, (top + 224) / sy)
        crop = image.resize((224, 224), Image.Resampling.BICUBIC, box=box)
        x = (np.asarray(crop, np.float32) - 127.0) / 128.0
        (logits,) = self.session.run(None, {"images": x.transpose(2, 0, 1)[None]})
        p = np.exp(logits[0] - logits[0].max())
        p /= p.sum()
        top3 = np.argsort(-p)[:3]
        return [(self.labels[i], float(p[i])) for i in top3]


def in_process(rounds: int, labels_file: Path) -> dict:
    labels = load_labels()
    images = analysis_images()
    settings = Settings.from_env(species_settings(labels_file, ONNX=str(MODEL)))
    step = model_step(settings.model_steps["species"], PROJECT_ROOT)
    step.check()
    bare = BareClassifier(labels)
    times: dict[str, list[float]] = {"model_step": [], "bare": []}
    for image in images:  # warm both (and check they agree)
        assert step.predict(image).labels[0][0] == bare.predict(image)[0][0]
    for r in range(rounds):
        for i, image in enumerate(images):
            order = ("model_step", "bare") if (r + i) % 2 == 0 else ("bare", "model_step")
            for which in order:
                started = time.perf_counter()
                if which == "bare":
                    bare.predict(image)
                else:
                    step.predict(image)
                times[which].append((time.perf_counter() - started) * 1000)
    medians = {k: round(statistics.median(v), 2) for k, v in times.items()}
    return {
        "images": len(images),
        "rounds": rounds,
        "median_ms": medians,
        "ratio": round(medians["model_step"] / medians["bare"], 3),
    }


def remote_wait(images: int, delay_ms: int, labels_file: Path) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = emulator_env(Path(tmp) / "stack")
        files = make_photos(Path(tmp), images, 2.0)
        with running_emulators(stack):
            for name, delay in (("at_once", 0.0), ("delayed", delay_ms / 1000)):
                results[name] = _chain_with_server(stack, files, delay, labels_file)
    return {
        "images": images,
        "delay_ms": delay_ms,
        "img_s": results,
        "ratio": round(results["delayed"] / results["at_once"], 3),
    }


def _chain_with_server(stack: dict, files: list[Path], delay: float, labels_file: Path) -> float:
    server = LoopbackOipServer(MODEL, delay=delay)
    try:
        env = {
            **stack,
            **species_settings(labels_file, OIP_URL=server.url, OIP_MODEL="toy"),
            "DARKROOM_MODEL_SPECIES__CONCURRENCY": "16",
        }
        return chain(env, "prepare,species,store", files, 2)["img_s"]
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--no-chain", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        labels_file = Path(tmp) / "labels.txt"
        labels_file.write_text("\n".join(load_labels()))
        report = {"in_process": in_process(args.rounds, labels_file)}
        print(json.dumps(report["in_process"]), flush=True)
        if not args.no_chain:
            report["remote_wait"] = remote_wait(args.images, args.delay_ms, labels_file)
            print(json.dumps(report["remote_wait"]), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
