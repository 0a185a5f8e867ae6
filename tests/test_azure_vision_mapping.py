"""The Azure AI Vision provider offline: mapping of recorded responses, start-up errors, error
classification, and the real SDK end to end through a fake HTTP transport (no network)."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from azure.ai.vision.imageanalysis.models import ImageAnalysisResult
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from PIL import Image

from pipeline.framework.step_api import ImageRejected
from pipeline.settings import Settings
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.capabilities import capabilities
from pipeline.vision.cloud import azure_vision
from pipeline.vision.cloud.azure_vision import (
    AzureFaceDetector,
    AzureModerator,
    AzureObjectDetector,
    AzureReader,
    AzureTagger,
    AzureVisionClient,
    AzureVisionConfigError,
    AzureVisionImageError,
    AzureVisionSettings,
    classify_error,
    map_caption,
    map_objects,
    map_people,
    map_read,
    map_tags,
    polygon_box,
    shared_client,
    translate_error,
)

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "fixtures" / "azure"
ENDPOINT = "https://darkroom-test.cognitiveservices.azure.com/"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / name).read_text())


def result(name: str) -> ImageAnalysisResult:
    return ImageAnalysisResult(recorded(name))


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


ERRORS = recorded("errors.json")


# --------------------------------------------------------------------------------------------
# Mapping on recorded responses


def test_tags_are_filtered_sorted_and_cut():
    r = result("dog-bicycle.json")
    tags = map_tags(r, top_k=5, min_score=0.5)
    assert [t.name for t in tags] == ["bicycle", "outdoor", "dog", "bicycle wheel", "wheel"]
    assert tags[0].score == pytest.approx(0.9943)
    every = map_tags(r, top_k=100, min_score=0.5)
    assert len(every) == 15  # `parked` 0.4873 and `street` 0.4128 are below 0.5
    assert {"parked", "street"}.isdisjoint(t.name for t in every)
    assert [t.score for t in every] == sorted((t.score for t in every), reverse=True)
    assert len(map_tags(r, top_k=100, min_score=0.0)) == 17


def test_tags_sorted_even_when_the_service_does_not_and_names_normalised():
    r = ImageAnalysisResult(
        {
            "modelVersion": "2023-10-01",
            "metadata": {"width": 100, "height": 100},
            "tagsResult": {
                "values": [
                    {"name": "grass", "confidence": 0.61},
                    {"name": "Outdoor", "confidence": 0.99},
                    {"name": "sky", "confidence": 0.87},
                    {"name": "outdoor", "confidence": 0.42},
                ]
            },
        }
    )
    assert [(t.name, t.score) for t in map_tags(r)] == [
        ("outdoor", 0.99),
        ("sky", 0.87),
        ("grass", 0.61),
    ]


def test_objects_use_the_first_tag_and_keep_boxes_as_xywh():
    objects = map_objects(result("dog-bicycle.json"))
    assert [(o.name, o.score) for o in objects] == [
        ("dog", 0.893),
        ("bicycle", 0.854),
        ("truck", 0.636),
    ]
    by_name = {o.name: o.box for o in objects}
    assert by_name["bicycle"] == (126.0, 134.0, 441.0, 287.0)
    assert by_name["dog"] == (131.0, 221.0, 178.0, 322.0)
    assert by_name["truck"] == (466.0, 74.0, 225.0, 97.0)
    for x, y, w, h in by_name.values():  # inside the 768x576 image
        assert x >= 0 and y >= 0 and x + w <= 768 and y + h <= 576
    assert [o.name for o in map_objects(result("dog-bicycle.json"), min_score=0.7)] == [
        "dog",
        "bicycle",
    ]


def test_boxes_poking_out_of_the_image_are_clamped():
    r = ImageAnalysisResult(
        {
            "modelVersion": "2023-10-01",
            "metadata": {"width": 200, "height": 100},
            "objectsResult": {
                "values": [
                    {
                        "boundingBox": {"x": -3, "y": 10, "w": 210, "h": 95},
                        "tags": [{"name": "Land vehicle", "confidence": 0.7}],
                    }
                ]
            },
        }
    )
    (obj,) = map_objects(r)
    assert obj.name == "land vehicle"
    assert obj.box == (0.0, 10.0, 200.0, 90.0)


def test_people_are_person_objects_above_a_threshold():
    people = map_people(result("person-dog-horse.json"))
    assert [(p.name, p.score, p.box) for p in people] == [
        ("person", 0.9324, (189.0, 98.0, 89.0, 280.0))
    ]
    assert map_people(result("dog-bicycle.json")) == []  # only near-zero candidates
    assert len(map_people(result("dog-bicycle.json"), min_score=0.0)) == 2


def test_read_lines_full_text_boxes_and_confidence():
    text = map_read(result("text-clean.json"))
    expected = (ROOT / "tests" / "fixtures" / "text-clean.txt").read_text().splitlines()
    assert [line.text for line in text.lines] == expected
    assert text.full == "\n".join(expected)
    first = text.lines[0]
    assert first.box == (30.0, 18.0, 319.0, 13.0)
    words = recorded("text-clean.json")["readResult"]["blocks"][0]["lines"][0]["words"]
    assert first.confidence == pytest.approx(np.mean([w["confidence"] for w in words]))
    # Line 2 is indented and its right edge tilted by a pixel: the box covers the whole polygon.
    second = text.lines[1]
    assert second.box == (51.0, 37.0, 478.0, 14.0)
    for line in text.lines:
        x, y, w, h = line.box
        assert x >= 0 and y >= 0 and x + w <= 556 and y + h <= 257
        assert 0.95 <= line.confidence <= 1.0


def test_read_on_a_photo_and_absent_read():
    text = map_read(result("dog-bicycle.json"))
    assert text.full == "CAAD8"
    assert text.lines[0].box == (296.0, 202.0, 45.0, 11.0)
    assert text.lines[0].confidence == pytest.approx(0.671)
    assert map_read(result("person-dog-horse.json")).model_dump() == {"full": "", "lines": []}


def test_read_joins_lines_of_several_blocks_and_handles_wordless_lines():
    def line(text, y, words):
        poly = [
            {"x": 10, "y": y},
            {"x": 90, "y": y + 2},
            {"x": 88, "y": y + 12},
            {"x": 8, "y": y + 10},
        ]
        return {"text": text, "boundingPolygon": poly, "words": words}

    word = {"text": "a", "boundingPolygon": [], "confidence": 0.5}
    r = ImageAnalysisResult(
        {
            "modelVersion": "2023-10-01",
            "metadata": {"width": 100, "height": 100},
            "readResult": {
                "blocks": [
                    {"lines": [line("one", 5, [word, {**word, "confidence": 0.9}])]},
                    {"lines": [line("two", 40, [])]},
                ]
            },
        }
    )
    text = map_read(r)
    assert text.full == "one\ntwo"
    assert text.lines[0].box == (8.0, 5.0, 82.0, 12.0)
    assert text.lines[0].confidence == pytest.approx(0.7)
    assert text.lines[1].confidence == 0.0


def test_polygon_box_without_result():
    class P:
        def __init__(self, x, y):
            self.x, self.y = x, y

    assert polygon_box([P(5, 7), P(20, 6), P(21, 30), P(4, 31)]) == (4.0, 6.0, 17.0, 25.0)
    assert polygon_box([]) == (0.0, 0.0, 0.0, 0.0)


def test_caption():
    assert map_caption(result("dog-bicycle.json")) == "a dog sitting next to a bicycle on a porch"
    assert map_caption(result("text-clean.json")) is None


def test_everything_missing_maps_to_empty_results():
    r = ImageAnalysisResult({"modelVersion": "2023-10-01", "metadata": {"width": 1, "height": 1}})
    assert map_tags(r) == [] and map_objects(r) == [] and map_people(r) == []
    assert map_read(r).full == "" and map_caption(r) is None


# --------------------------------------------------------------------------------------------
# Start-up errors


def test_missing_endpoint_fails_at_load_with_the_setting_name():
    client = AzureVisionClient(Settings.from_env({}))
    analyzer = AzureTagger(client=client)
    with pytest.raises(ModelUnavailable, match="DARKROOM_AZURE_VISION_ENDPOINT is not set"):
        analyzer.load()
    assert not analyzer.loaded


def test_missing_endpoint_fails_the_start_up_check_as_the_registry_builds_it():
    client = shared_client(endpoint=None, key=None, settings=Settings.from_env({}))
    analyzer = AzureReader(endpoint=None, key=None, client=client)
    with pytest.raises(ModelUnavailable, match="DARKROOM_AZURE_VISION_ENDPOINT is not set"):
        analyzer.check()


def test_one_client_per_endpoint_and_key_in_the_process():
    settings = Settings.from_env({"DARKROOM_AZURE_VISION_RETRIES": "1"})
    first = shared_client(ENDPOINT, "k", settings)
    assert shared_client(ENDPOINT, "k", settings) is first
    assert shared_client(ENDPOINT, "other", settings) is not first
    assert first.settings == AzureVisionSettings(ENDPOINT, "k", None, 30.0, 1)
    from_env = shared_client(
        settings=Settings.from_env({"DARKROOM_AZURE_VISION_ENDPOINT": ENDPOINT})
    )
    assert from_env.settings.endpoint == ENDPOINT and from_env.settings.key is None


def test_registry_names_resolve_to_these_classes():

    declared = capabilities().values()
    for capability, provider, target in (
        (c.name, p, t) for c in declared for p, t in c.providers.items()
    ):
        module, _, name = target.partition(":")
        if provider == "azure":
            assert module == "pipeline.vision.cloud.azure_vision"
            assert getattr(azure_vision, name).capability == capability


def test_missing_sdk_fails_at_load_with_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.ai.vision.imageanalysis", None)
    client = AzureVisionClient(AzureVisionSettings(endpoint=ENDPOINT, key="k"))
    with pytest.raises(ModelUnavailable, match="pip install azure-ai-vision-imageanalysis"):
        AzureReader(client=client).load()


def test_settings_are_read_from_the_app_settings():
    s = Settings.from_env(
        {
            "DARKROOM_AZURE_VISION_ENDPOINT": " https://x.cognitiveservices.azure.com/ ",
            "DARKROOM_AZURE_VISION_KEY": "k",
            "DARKROOM_AZURE_VISION_MODEL_VERSION": "latest",
            "DARKROOM_AZURE_VISION_RETRIES": "0",
        }
    ).analysis.azure
    assert s == AzureVisionSettings("https://x.cognitiveservices.azure.com/", "k", None, 30.0, 0)
    with pytest.raises(ValueError, match="DARKROOM_AZURE_VISION_TIMEOUT"):
        Settings.from_env({"DARKROOM_AZURE_VISION_TIMEOUT": "soon"})


def test_without_a_key_the_client_uses_a_token_credential():
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy

    client = AzureVisionClient(AzureVisionSettings(endpoint=ENDPOINT))
    sdk = client.connect()  # builds DefaultAzureCredential; no token is fetched yet
    assert isinstance(sdk._config.authentication_policy, BearerTokenCredentialPolicy)
    assert sdk._config.credential_scopes == ["https://cognitiveservices.azure.com/.default"]


def test_faces_and_moderation_are_unsupported_with_a_reason():
    with pytest.raises(ModelUnavailable, match=r"DARKROOM_FACES_PROVIDER=local, or =face"):
        AzureFaceDetector(endpoint=ENDPOINT, key="k", min_score=0.6).check()
    with pytest.raises(ModelUnavailable, match="Content Safety"):
        AzureModerator(endpoint=ENDPOINT, key="k").load()


# --------------------------------------------------------------------------------------------
# Error classification on HttpResponseError instances built without network


class _Response:
    """What HttpResponseError reads from a response: status, reason, body text."""

    def __init__(self, status: int, body: object = None, reason: str = "") -> None:
        self.status_code, self.reason = status, reason
        self._text = body if isinstance(body, str) else json.dumps(body) if body else ""

    def text(self, encoding: str | None = None) -> str:
        return self._text


def http_error(name: str) -> HttpResponseError:
    reply = ERRORS[name]
    return HttpResponseError(response=_Response(reply["status"], reply["body"]))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("invalid-image-format", "image"),
        ("invalid-image-size", "image"),
        ("image-too-large", "image"),
        ("feature-not-supported", "config"),
        ("unauthorized", "config"),
        ("rate-limited", "transient"),
        ("server-error", "transient"),
        ("service-unavailable", "transient"),
    ],
)
def test_recorded_errors_are_classified(name, kind):
    assert classify_error(http_error(name)) == kind


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (408, None, "transient"),
        (502, "<html>Bad Gateway</html>", "transient"),
        (504, None, "transient"),
        (413, None, "image"),
        (415, None, "image"),
        (403, {"error": {"code": "403", "message": "Out of call volume quota"}}, "config"),
        (404, {"error": {"code": "404", "message": "Resource not found"}}, "config"),
        (400, {"error": {"code": "InvalidRequest", "message": "Invalid model-version"}}, "config"),
    ],
)
def test_status_codes_are_classified(status, body, kind):
    assert classify_error(HttpResponseError(response=_Response(status, body))) == kind


def test_errors_without_a_response_are_transient():
    assert classify_error(ServiceRequestError("connection refused")) == "transient"
    assert classify_error(ServiceResponseError("read timed out")) == "transient"
    assert classify_error(TimeoutError()) == "transient"


def test_translation_keeps_transient_errors_and_explains_the_others():
    busy = http_error("rate-limited")
    assert translate_error(busy) is busy
    refused = translate_error(http_error("invalid-image-format"))
    assert isinstance(refused, AzureVisionImageError)
    assert isinstance(refused, ImageRejected) and isinstance(refused, ValueError)
    assert refused.reason == (
        "Azure AI Vision cannot analyze this image "
        "(HTTP 400 InvalidRequest/InvalidImageFormat: Input data is not a valid image.)"
    )
    config = translate_error(http_error("feature-not-supported"))
    assert isinstance(config, AzureVisionConfigError) and isinstance(config, ModelUnavailable)
    assert "NotSupportedFeature" in str(config) and "region" in str(config)


# --------------------------------------------------------------------------------------------
# The real SDK end to end through a fake transport


class RecordedAdapter(requests.adapters.BaseAdapter):
    """A requests adapter that answers from recorded replies instead of the network."""

    def __init__(self, *replies, delay: float = 0.0) -> None:
        super().__init__()
        self.replies = list(replies)
        self.requests: list[requests.PreparedRequest] = []
        self.delay = delay

    def send(self, request, **kwargs):
        self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        status, headers, body = reply
        response = requests.Response()
        response.status_code = status
        response.reason = requests.status_codes._codes[status][0].upper()
        response.headers.update(headers)
        response._content = json.dumps(body).encode()
        response.raw = io.BytesIO(response._content)
        response.encoding = "utf-8"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


def ok(name: str):
    return (200, {"Content-Type": "application/json; charset=utf-8"}, recorded(name))


def error(name: str):
    reply = ERRORS[name]
    return (reply["status"], reply["headers"], reply["body"])


def query_of(request: requests.PreparedRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def offline_client(adapter: RecordedAdapter, **settings) -> AzureVisionClient:
    session = requests.Session()
    session.mount("https://", adapter)
    options = {"endpoint": ENDPOINT, "key": "test-key", "retries": 0, **settings}
    return AzureVisionClient(
        AzureVisionSettings(**options),
        transport=RequestsTransport(session=session, session_owner=False),
    )


@pytest.fixture(scope="module")
def dog() -> np.ndarray:
    return rgb(ROOT / "tests" / "fixtures" / "dog.jpg")


def test_three_capabilities_one_request_through_the_real_sdk(dog):
    adapter = RecordedAdapter(ok("dog-bicycle.json"))
    client = offline_client(adapter)
    tags, objects, text = (
        AzureTagger(client=client),
        AzureObjectDetector(client=client),
        AzureReader(client=client),
    )
    for analyzer in (tags, objects, text):
        analyzer.load()  # start-up: registers features, builds the client, no request

    assert adapter.requests == []
    assert [t.name for t in tags.predict(dog)][:3] == ["bicycle", "outdoor", "dog"]
    assert [o.name for o in objects.predict(dog)] == ["dog", "bicycle", "truck"]
    assert text.predict(dog).full == "CAAD8"
    assert len(adapter.requests) == 1 and client.calls == 1

    sent = adapter.requests[0]
    url = urlsplit(sent.url)
    assert url.netloc == "darkroom-test.cognitiveservices.azure.com"
    assert url.path == "/computervision/imageanalysis:analyze"
    query = query_of(sent)
    assert query["api-version"] == "2023-10-01"
    assert query["features"] == "objects,read,tags"
    assert query["gender-neutral-caption"] == "true"
    assert "model-version" not in query
    assert sent.method == "POST"
    assert sent.headers["Ocp-Apim-Subscription-Key"] == "test-key"
    assert sent.headers["Content-Type"] == "application/octet-stream"
    sent_image = Image.open(io.BytesIO(sent.body))
    assert sent_image.format == "JPEG" and sent_image.size == (768, 576)

    for analyzer in (tags, objects, text):
        assert analyzer.ident == "azure-ai-vision-imageanalysis@4.0/2023-10-01"


def test_one_request_even_when_nothing_was_loaded_before_the_first_image(dog):
    adapter = RecordedAdapter(ok("dog-bicycle.json"))
    client = offline_client(adapter)
    analyzers = [AzureReader(client=client), AzureTagger(client=client)]
    for analyzer in analyzers:
        analyzer.predict(dog)  # loads on demand
    assert len(adapter.requests) == 1
    assert query_of(adapter.requests[0])["features"] == "read,tags"


def test_caption_through_the_shared_call_with_sdk_enum_features(dog):
    from azure.ai.vision.imageanalysis.models import VisualFeatures

    adapter = RecordedAdapter(ok("dog-bicycle.json"))
    client = offline_client(adapter)
    tags = AzureTagger(client=client)
    client.require([VisualFeatures.CAPTION])
    tags.predict(dog)
    caption = map_caption(client.analyze(dog, [VisualFeatures.CAPTION]))
    assert caption == "a dog sitting next to a bicycle on a porch"
    assert len(adapter.requests) == 1
    assert query_of(adapter.requests[0])["features"] == "caption,tags"


def test_cache_is_by_pixels_and_widens_when_a_feature_is_added(dog):
    adapter = RecordedAdapter(ok("dog-bicycle.json"))
    client = offline_client(adapter)
    tags = AzureTagger(client=client)
    tags.load()
    tags.predict(dog)
    tags.predict(dog.copy())  # same pixels, other array: cached
    assert client.calls == 1
    tags.predict(np.ascontiguousarray(dog[:, ::-1]))  # other pixels: a new call
    assert client.calls == 2

    text = AzureReader(client=client)  # built late: the cached result lacks READ
    text.load()
    assert text.predict(dog).full == "CAAD8"
    assert client.calls == 3
    assert query_of(adapter.requests[-1])["features"] == "read,tags"
    tags.predict(dog)
    assert client.calls == 3


def test_concurrent_predictions_of_one_image_share_the_call(dog):
    adapter = RecordedAdapter(ok("dog-bicycle.json"), delay=0.3)
    client = offline_client(adapter)
    analyzers = [
        AzureTagger(client=client),
        AzureObjectDetector(client=client),
        AzureReader(client=client),
    ]
    for analyzer in analyzers:
        analyzer.load()
    results = {}
    threads = [
        threading.Thread(target=lambda a=a: results.__setitem__(a.capability, a.predict(dog)))
        for a in analyzers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"tags", "objects", "text"}
    assert len(adapter.requests) == 1


def test_people_option_replaces_object_persons_with_the_people_model():
    image = rgb(ROOT / "samples" / "person-dog-horse.jpg")
    adapter = RecordedAdapter(ok("person-dog-horse.json"))
    client = offline_client(adapter)
    plain, with_people = (
        AzureObjectDetector(client=client),
        AzureObjectDetector(client=client, people=True),
    )
    plain.load()
    with_people.load()
    found = with_people.predict(image)
    assert [(o.name, o.score) for o in found] == [
        ("person", 0.9324),
        ("horse", 0.861),
        ("dog", 0.774),
    ]
    assert [o.name for o in plain.predict(image)] == ["horse", "person", "dog"]
    assert query_of(adapter.requests[0])["features"] == "objects,people"
    assert client.calls == 1


def test_pinned_model_version_is_sent_and_names_the_version(dog):
    adapter = RecordedAdapter(ok("dog-bicycle.json"))
    client = offline_client(adapter, model_version="2023-10-01")
    tags = AzureTagger(client=client)
    tags.load()
    assert tags.version == "4.0/2023-10-01"
    tags.predict(dog)
    assert query_of(adapter.requests[0])["model-version"] == "2023-10-01"


def test_a_refused_image_is_rejected_not_retried(dog):
    adapter = RecordedAdapter(error("invalid-image-format"))
    client = offline_client(adapter, retries=3)
    tags = AzureTagger(client=client)
    tags.load()
    with pytest.raises(AzureVisionImageError) as caught:
        tags.predict(dog)
    assert isinstance(caught.value, ImageRejected)
    assert "Input data is not a valid image." in caught.value.reason
    assert isinstance(caught.value.__cause__, HttpResponseError)
    assert len(adapter.requests) == 1  # the SDK does not retry a 400 either


def test_too_small_for_the_service_is_refused_before_any_request():
    adapter = RecordedAdapter(ok("dog-bicycle.json"))
    client = offline_client(adapter)
    tags = AzureTagger(client=client)
    tags.load()
    with pytest.raises(AzureVisionImageError, match="40x60 is outside its limits"):
        tags.predict(np.zeros((60, 40, 3), np.uint8))
    assert adapter.requests == []


def test_transient_errors_are_raised_as_they_are_and_not_cached(dog):
    adapter = RecordedAdapter(error("service-unavailable"), ok("dog-bicycle.json"))
    client = offline_client(adapter)
    tags = AzureTagger(client=client)
    tags.load()
    with pytest.raises(HttpResponseError) as caught:
        tags.predict(dog)
    assert caught.value.status_code == 503
    assert classify_error(caught.value) == "transient"
    assert not isinstance(caught.value, ImageRejected | ModelUnavailable)
    assert [t.name for t in tags.predict(dog)][:1] == ["bicycle"]  # the retry calls again
    assert len(adapter.requests) == 2


def test_the_sdk_retries_a_server_error_before_giving_up(dog):
    adapter = RecordedAdapter(error("server-error"), ok("dog-bicycle.json"))
    client = offline_client(adapter, retries=1)
    tags = AzureTagger(client=client)
    tags.load()
    assert tags.predict(dog)[0].name == "bicycle"
    assert len(adapter.requests) == 2 and client.calls == 1


def test_connection_errors_surface_as_transient(dog):
    adapter = RecordedAdapter(requests.exceptions.ConnectionError("no route to host"))
    client = offline_client(adapter)
    tags = AzureTagger(client=client)
    tags.load()
    with pytest.raises(ServiceRequestError) as caught:
        tags.predict(dog)
    assert classify_error(caught.value) == "transient"


def test_a_bad_key_is_a_configuration_error(dog):
    adapter = RecordedAdapter(error("unauthorized"))
    client = offline_client(adapter)
    tags = AzureTagger(client=client)
    tags.load()
    with pytest.raises(AzureVisionConfigError, match="HTTP 401") as caught:
        tags.predict(dog)
    assert isinstance(caught.value.__cause__, ClientAuthenticationError)


def test_the_caption_capability_through_the_shared_call(dog):
    """caption (pipeline/vision/capabilities/caption.py) with DARKROOM_CAPTION_PROVIDER=azure:
    one request for caption and tags together, the caption with its confidence."""
    from pipeline.vision.cloud.azure_vision import AzureCaptioner

    adapter = RecordedAdapter(ok("dog-bicycle.json"))
    client = offline_client(adapter)
    caption, tags = AzureCaptioner(client=client), AzureTagger(client=client)
    got = caption.predict(dog)
    assert got.text == "a dog sitting next to a bicycle on a porch"
    assert got.confidence is not None and 0 < got.confidence <= 1
    assert tags.predict(dog)
    assert len(adapter.requests) == 1
    assert query_of(adapter.requests[0])["features"] == "caption,tags"
    empty = AzureCaptioner(client=offline_client(RecordedAdapter(ok("text-clean.json"))))
    assert empty.predict(dog).text == ""


def test_caption_is_off_by_default_and_local_says_why_at_start_up():
    from pipeline.vision.providers import check_configuration

    assert "caption" not in Settings.from_env({}).analysis.capabilities
    settings = Settings.from_env({"DARKROOM_ANALYZERS": "tags,caption"})
    with pytest.raises(
        ModelUnavailable,
        match="no offline model writes captions: set DARKROOM_CAPTION_PROVIDER=azure",
    ):
        check_configuration(settings.analysis)
