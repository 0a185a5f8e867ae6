"""The vision settings: which capabilities the analyze step runs, who answers each, and the
options each capability declares (pipeline.vision.capabilities); Azure AI Vision's endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.setting_reader import SettingReader
from pipeline.vision.capabilities import capabilities, capability_names


@dataclass(frozen=True)
class AzureVisionSettings:
    """Azure AI Vision (Image Analysis 4.0): endpoint, optional key (else managed identity)."""

    endpoint: str | None = None
    key: str | None = field(default=None, repr=False)
    model_version: str | None = None  # None: the service's "latest"
    timeout: float = 30.0  # read timeout of one HTTP attempt, seconds
    retries: int = 2  # the SDK's own retries of 429/5xx/connection errors before raising

    @classmethod
    def read(cls, r: SettingReader) -> AzureVisionSettings:
        model_version = r.optional("DARKROOM_AZURE_VISION_MODEL_VERSION")
        return cls(
            endpoint=r.optional("DARKROOM_AZURE_VISION_ENDPOINT"),
            key=r.optional("DARKROOM_AZURE_VISION_KEY", secret=True),
            model_version=None if model_version == "latest" else model_version,
            timeout=r.number("DARKROOM_AZURE_VISION_TIMEOUT", 30.0, float, minimum=1),
            retries=r.number("DARKROOM_AZURE_VISION_RETRIES", 2, minimum=0, maximum=10),
        )


@dataclass(frozen=True)
class DocIntelSettings:
    """Azure AI Document Intelligence (`prebuilt-read`, for text): endpoint, optional key (else
    the app's identity, Cognitive Services User)."""

    endpoint: str | None = None
    key: str | None = field(default=None, repr=False)
    api_version: str = "2024-11-30"  # the v4.0 GA API
    timeout: float = 30.0  # seconds for one image, polling included

    @classmethod
    def read(cls, r: SettingReader) -> DocIntelSettings:
        return cls(
            endpoint=r.optional("DARKROOM_DOCINTEL_ENDPOINT"),
            key=r.optional("DARKROOM_DOCINTEL_KEY", secret=True),
            api_version=r.text("DARKROOM_DOCINTEL_API_VERSION", cls.api_version),
            timeout=r.number("DARKROOM_DOCINTEL_TIMEOUT", cls.timeout, float, 1, 600),
        )


@dataclass(frozen=True)
class FaceSettings:
    """Azure AI Face, detection only (boxes and landmarks; no face IDs, so no Limited Access
    approval): endpoint, optional key (else the app's identity, Cognitive Services User)."""

    endpoint: str | None = None
    key: str | None = field(default=None, repr=False)
    api_version: str = "v1.2"  # the GA Face API
    detection_model: str = "detection_03"  # 01 and 03 return landmarks; 02 returns none
    timeout: float = 30.0  # seconds for one detect call

    @classmethod
    def read(cls, r: SettingReader) -> FaceSettings:
        return cls(
            endpoint=r.optional("DARKROOM_FACE_ENDPOINT"),
            key=r.optional("DARKROOM_FACE_KEY", secret=True),
            api_version=r.text("DARKROOM_FACE_API_VERSION", cls.api_version),
            detection_model=r.text(
                "DARKROOM_FACE_DETECTION_MODEL",
                cls.detection_model,
                ("detection_01", "detection_03"),
            ),
            timeout=r.number("DARKROOM_FACE_TIMEOUT", cls.timeout, float, 1, 600),
        )


@dataclass(frozen=True)
class OpenAISettings:
    """A GPT vision deployment on Azure OpenAI / Azure AI Foundry (caption, tags, objects, text
    in one call per image): endpoint, deployment, optional key (else the app's identity,
    Cognitive Services OpenAI User), and the prices that turn tokens into an estimated cost."""

    endpoint: str | None = None
    deployment: str | None = None
    key: str | None = field(default=None, repr=False)
    model: str = ""  # "gpt-4.1-mini@2025-04-14": recorded as the model identity
    # "v1": the version-less v1 API (GA 2025: /openai/v1/…, the deployment named in `model`),
    # which takes every current model; or a dated version (e.g. 2024-10-21) for the
    # /openai/deployments/{deployment}/… paths.
    api_version: str = "v1"
    detail: str = "high"  # image detail: high reads small text, low is ~85 tokens per image
    # Reasoning models (gpt-5 family) spend part of it thinking: an answer cut short is an error.
    max_output_tokens: int = 4000
    timeout: float = 60.0
    # USD per million tokens (gpt-4.1-mini, Global Standard, as published in 2025): the
    # estimated cost recorded per image. Set your deployment's prices.
    input_price: float = 0.40
    output_price: float = 1.60
    # A text-embedding deployment (text-embedding-3-small): search ranks by words AND by the
    # caption's meaning (RRF) when set. Its dimensions are the images container's vector policy.
    embedding_deployment: str | None = None
    embedding_dimensions: int = 1536

    @classmethod
    def read(cls, r: SettingReader) -> OpenAISettings:
        return cls(
            endpoint=r.optional("DARKROOM_OPENAI_ENDPOINT"),
            deployment=r.optional("DARKROOM_OPENAI_DEPLOYMENT"),
            key=r.optional("DARKROOM_OPENAI_KEY", secret=True),
            model=r.text("DARKROOM_OPENAI_MODEL", cls.model),
            api_version=r.text("DARKROOM_OPENAI_API_VERSION", cls.api_version),
            detail=r.text("DARKROOM_OPENAI_DETAIL", cls.detail, ("low", "high", "auto")),
            max_output_tokens=r.number(
                "DARKROOM_OPENAI_MAX_OUTPUT_TOKENS", cls.max_output_tokens, int, 100, 16000
            ),
            timeout=r.number("DARKROOM_OPENAI_TIMEOUT", cls.timeout, float, 1, 600),
            input_price=r.number("DARKROOM_OPENAI_INPUT_PRICE", cls.input_price, float, 0, 1000),
            output_price=r.number("DARKROOM_OPENAI_OUTPUT_PRICE", cls.output_price, float, 0, 1000),
            embedding_deployment=r.optional("DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT"),
            embedding_dimensions=r.number(
                "DARKROOM_OPENAI_EMBEDDING_DIMENSIONS", cls.embedding_dimensions, int, 16, 4096
            ),
        )


@dataclass(frozen=True)
class AnalysisSettings:
    """Which capabilities the analyze step runs (DARKROOM_ANALYZERS), the provider of each
    (DARKROOM_<CAPABILITY>_PROVIDER) and each capability's own options, read as it declares
    them."""

    capabilities: tuple[str, ...] = ()
    providers: Mapping[str, str] = field(default_factory=dict)  # capability -> provider name
    # capability -> every option it declares, by constructor keyword
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    azure: AzureVisionSettings = field(default_factory=AzureVisionSettings)
    docintel: DocIntelSettings = field(default_factory=DocIntelSettings)
    face: FaceSettings = field(default_factory=FaceSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)

    def provider(self, capability: str) -> str:
        return self.providers.get(capability, "local")

    def options_for(self, capability: str) -> dict[str, Any]:
        """The options the configured provider of `capability` takes."""
        provider = self.provider(capability)
        values = self.options.get(capability, {})
        return {
            option.keyword: values[option.keyword]
            for option in capabilities()[capability].options
            if option.applies_to(provider) and option.keyword in values
        }

    @classmethod
    def read(cls, r: SettingReader) -> AnalysisSettings:
        declared = capabilities()
        names = capability_names()
        default = ",".join(c.name for c in declared.values() if c.enabled_by_default)
        raw = r.text("DARKROOM_ANALYZERS", default)
        enabled = tuple(c.strip().lower() for c in raw.split(",") if c.strip())
        if unknown := [c for c in enabled if c not in declared]:
            r.problems.append(
                f"DARKROOM_ANALYZERS names unknown capabilities {unknown}; known: "
                f"{', '.join(names)}"
            )
            enabled = tuple(c for c in enabled if c in declared)
        providers = {
            c.name: r.text(c.provider_setting(), "local", tuple(c.providers))
            for c in declared.values()
        }
        options = {
            c.name: {option.keyword: option.read(r) for option in c.options}
            for c in declared.values()
        }
        return cls(
            capabilities=enabled,
            providers={c: providers[c] for c in enabled},
            options=options,
            azure=AzureVisionSettings.read(r),
            docintel=DocIntelSettings.read(r),
            face=FaceSettings.read(r),
            openai=OpenAISettings.read(r),
        )
