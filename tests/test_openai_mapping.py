"""caption, tags, objects and text from a GPT vision deployment (`openai`), through the real
HTTP client against a loopback server speaking Azure OpenAI's chat-completions protocol
(tests/openai_server.py): one call per image for every capability, the structured-output
request, the recorded identity, tokens and cost, the key header and the key in no log or
result, 429 with Retry-After, content-filter refusals (prompt and answer) as recorded results,
timeouts."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipeline.framework.step_api import StepFailed, TryLater
from pipeline.settings import Settings
from pipeline.vision.base import ModelUnavailable
from pipeline.vision.cloud.openai_vision import ContentFiltered, prompt_digest
from pipeline.vision.providers import check_configuration, enabled_analyzers
from tests.openai_server import (
    MODEL,
    PROMPT_FILTERED,
    RATE_LIMITED,
    OpenAIServer,
    answer_filtered,
)

KEY = "aoai-key-0123456789abcdef0123"
PARTS = {
    "caption": "A brown horse grazing in a green field beside a wooden fence.",
    "tags": [
        {"name": "Horse", "confidence": 0.98},
        {"name": "grass", "confidence": 0.91},
        {"name": "fence", "confidence": 0.72},
        {"name": "horse", "confidence": 0.5},
    ],
    "objects": [{"name": "horse", "confidence": 0.97}, {"name": "Fence", "confidence": 0.8}],
    "text": ["NO  ENTRY", "Private land"],
}
CAPABILITIES = ("caption", "tags", "objects", "text")


@pytest.fixture
def service():
    seen = []

    def describe(image):
        seen.append(image.size)
        return PARTS

    with OpenAIServer(describe, deployment="vision", key=KEY) as server:
        server.seen = seen
        yield server


def analyzers(service, n: int = 0, **extra):
    """The four openai analyzers of a fresh deployment name (one shared client each time)."""
    return analyzers_at(service, DARKROOM_OPENAI_MODEL=f"gpt-4.1-mini@{n}", **extra)


def analyzers_at(service, **extra):
    settings = Settings.from_env(
        {
            "DARKROOM_ANALYZERS": ",".join(CAPABILITIES),
            **{f"DARKROOM_{c.upper()}_PROVIDER": "openai" for c in CAPABILITIES},
            "DARKROOM_OPENAI_ENDPOINT": service.url,
            "DARKROOM_OPENAI_DEPLOYMENT": "vision",
            "DARKROOM_OPENAI_KEY": KEY,
            "DARKROOM_TAGS_MIN_SCORE": "0.6",
            **extra,
        }
    )
    return enabled_analyzers(settings.analysis)


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (360, 480, 3), dtype=np.uint8)


def test_one_call_answers_every_capability_with_identity_and_cost(service, caplog):
    caplog.set_level(logging.DEBUG)
    found = analyzers(service, 1)
    image = pixels(1)
    caption, tags, objects, text = (found[c].predict(image) for c in CAPABILITIES)
    assert len(service.requests) == 1 and service.seen == [(480, 360)]
    assert caption.text == PARTS["caption"]
    assert [(t.name, t.score) for t in tags] == [("horse", 0.98), ("grass", 0.91), ("fence", 0.72)]
    assert [(o.name, o.box) for o in objects] == [("horse", None), ("fence", None)]
    assert text.full == "NO ENTRY\nPrivate land" and all(line.box is None for line in text.lines)

    request = service.requests[0]
    assert request["headers"]["api-key"] == KEY and "Authorization" not in request["headers"]
    body = request["body"]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == sorted(CAPABILITIES) and schema["additionalProperties"] is False
    assert body["model"] == "vision" and "temperature" not in body
    assert body["max_completion_tokens"] == 4000
    assert request["path"] == "/openai/v1/chat/completions"
    image_part = body["messages"][1]["content"][1]["image_url"]
    assert image_part["detail"] == "high"

    service_name, usage = found["caption"].usage()
    assert service_name == "openai" and (usage.input_tokens, usage.output_tokens) == (1105, 96)
    assert usage.cost_usd == pytest.approx((1105 * 0.40 + 96 * 1.60) / 1e6)
    ident = found["tags"].ident
    assert ident == f"azure-openai/vision@{MODEL}/v1/prompt-{prompt_digest()}"
    everything = caplog.text + "".join(
        r.model_dump_json() if hasattr(r, "model_dump_json") else str(r)
        for r in (caption, text, *tags, *objects, usage)
    )
    assert KEY not in everything


def test_busy_is_transient_with_the_wait_and_the_next_call_answers(service):
    found = analyzers(service, 2)
    service.script.append((429, {"Retry-After": "7", "retry-after-ms": "7000"}, RATE_LIMITED, 0))
    image = pixels(2)
    with pytest.raises(TryLater) as busy:
        found["caption"].predict(image)
    assert busy.value.retry_after == 7.0 and found["caption"].is_transient(busy.value)
    assert found["caption"].predict(image).text == PARTS["caption"]  # not remembered
    assert len(service.requests) == 2


def test_a_content_filter_refusal_is_a_result_for_every_capability_never_retried(service):
    found = analyzers(service, 3)
    service.script.append((400, {}, PROMPT_FILTERED, 0))
    image = pixels(3)
    for capability in CAPABILITIES:
        with pytest.raises(ContentFiltered, match=r"content filter refused the image: sexual") as e:
            found[capability].predict(image)
        assert not found[capability].is_transient(e.value)
    assert len(service.requests) == 1  # the refusal stands for the image: one call, not four

    service.script.append((200, {}, answer_filtered(), 0))
    with pytest.raises(ContentFiltered, match=r"withheld the answer: violence \(medium\)"):
        found["tags"].predict(pixels(4))


def test_other_refusals_are_configuration_errors_and_a_slow_answer_times_out(service):
    found = analyzers(service, 5, DARKROOM_OPENAI_TIMEOUT="1")
    service.script.append((401, {}, {"error": {"code": "401", "message": "Access denied"}}, 0))
    with pytest.raises(StepFailed, match="Access denied") as denied:
        found["caption"].predict(pixels(5))
    assert not found["caption"].is_transient(denied.value)
    service.script.append((200, {}, {}, 2.0))
    with pytest.raises(TryLater, match="did not answer"):
        found["caption"].predict(pixels(6))


def test_without_endpoint_or_deployment_the_start_up_check_names_both():
    settings = Settings.from_env(
        {"DARKROOM_ANALYZERS": "caption", "DARKROOM_CAPTION_PROVIDER": "openai"}
    )
    with pytest.raises(ModelUnavailable) as missing:
        check_configuration(settings.analysis)
    assert "DARKROOM_OPENAI_ENDPOINT" in str(missing.value)
    assert "DARKROOM_OPENAI_DEPLOYMENT" in str(missing.value)


def test_text_embeddings_through_the_same_client_with_their_dimensions():
    from pipeline.vision.cloud.openai_embedding import TextEmbedder
    from pipeline.vision.settings import OpenAISettings

    with OpenAIServer(lambda image: PARTS, key=KEY, embed=lambda text: [0.5] * 3000) as server:
        settings = OpenAISettings(
            endpoint=server.url,
            deployment="vision",
            key=KEY,
            embedding_deployment="embeddings",
            embedding_dimensions=256,
        )
        embedder = TextEmbedder(settings)
        assert embedder.configured
        assert embedder.embed("  a dog\non a beach ") == [0.5] * 256
        (request,) = server.requests
        assert request["path"] == "/openai/v1/embeddings"
        assert request["body"] == {
            "model": "embeddings",
            "input": ["a dog on a beach"],
            "dimensions": 256,
        }
        assert request["headers"]["api-key"] == KEY

        server.script.append((429, {"Retry-After": "3"}, RATE_LIMITED, 0))
        with pytest.raises(TryLater) as busy:
            embedder.embed("dog")
        assert busy.value.retry_after == 3.0
        server.script.append((200, {}, {"object": "list", "data": [{"embedding": [1.0]}]}, 0))
        with pytest.raises(StepFailed, match="answered 1 numbers, not"):
            embedder.embed("dog")
    assert not TextEmbedder(OpenAISettings(endpoint=server.url)).configured


def test_a_dated_api_version_uses_the_deployment_paths():
    with OpenAIServer(lambda image: PARTS, api_version="2024-10-21") as server:
        found = analyzers_at(server, DARKROOM_OPENAI_API_VERSION="2024-10-21")
        assert found["caption"].predict(pixels(9)).text == PARTS["caption"]
        (request,) = server.requests
        assert request["path"] == (
            "/openai/deployments/vision/chat/completions?api-version=2024-10-21"
        )
        assert "model" not in request["body"]
        assert found["caption"].ident.split("@")[1].split("/")[1] == "2024-10-21"


def test_without_a_key_the_endpoint_must_be_https_for_the_identity():
    settings = Settings.from_env(
        {
            "DARKROOM_ANALYZERS": "caption",
            "DARKROOM_CAPTION_PROVIDER": "openai",
            "DARKROOM_OPENAI_ENDPOINT": "http://aoai.internal",
            "DARKROOM_OPENAI_DEPLOYMENT": "vision",
        }
    )
    with pytest.raises(ModelUnavailable, match=r"must be https:// .* or set DARKROOM_OPENAI_KEY"):
        check_configuration(settings.analysis)
