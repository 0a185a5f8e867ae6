"""Which class answers which capability, per provider; one instance per worker process.

Providers are named by import path and imported on first use, so the Azure SDK is only imported
when a capability is configured for `azure`, and a local model's runtime (onnxruntime, OpenCV,
Node) only when that capability is enabled.
"""

from __future__ import annotations

import importlib
import threading

from pipeline.settings import AnalysisSettings
from pipeline.vision.base import CAPABILITIES, Analyzer, ModelUnavailable

PROVIDERS: dict[tuple[str, str], str] = {
    ("tags", "local"): "pipeline.vision.local.tags_efficientnet:EfficientNetTagger",
    ("objects", "local"): "pipeline.vision.local.objects_centernet:CenterNetObjectDetector",
    ("faces", "local"): "pipeline.vision.local.faces_blazeface:BlazeFaceDetector",
    ("text", "local"): "pipeline.vision.local.text_ppocr:PPOCRReader",
    ("text", "tesseract"): "pipeline.vision.local.text_tesseract:TesseractReader",
    ("moderation", "local"): "pipeline.vision.local.moderation_opennsfw:OpenNsfwModerator",
    ("tags", "azure"): "pipeline.vision.cloud.azure_vision:AzureTagger",
    ("objects", "azure"): "pipeline.vision.cloud.azure_vision:AzureObjectDetector",
    ("faces", "azure"): "pipeline.vision.cloud.azure_vision:AzureFaceDetector",
    ("text", "azure"): "pipeline.vision.cloud.azure_vision:AzureReader",
    # Image Analysis 4.0 has no moderation: this one explains so at start-up.
    ("moderation", "azure"): "pipeline.vision.cloud.azure_vision:AzureModerator",
}


def _options(capability: str, provider: str, config: AnalysisSettings) -> dict:
    """Constructor options each provider takes from the settings."""
    if provider == "azure":
        base = {"endpoint": config.azure.endpoint, "key": config.azure.key}
        extra = {
            "tags": {"top_k": config.tags_top_k, "min_score": config.tags_min_score},
            "objects": {"min_score": config.objects_min_score},
            "faces": {"min_score": config.faces_min_score},
        }.get(capability, {})
        return {**base, **extra}
    return {
        "tags": {"top_k": config.tags_top_k, "min_score": config.tags_min_score},
        "objects": {"min_score": config.objects_min_score},
        "faces": {"min_score": config.faces_min_score},
        "text": {"language": config.text_language},
        "moderation": {"threshold": config.moderation_threshold},
    }[capability]


_instances: dict[tuple, Analyzer] = {}
_lock = threading.Lock()


def analyzer_for(capability: str, config: AnalysisSettings) -> Analyzer:
    if capability not in CAPABILITIES:
        raise ModelUnavailable(f"unknown capability {capability!r}; known: {CAPABILITIES}")
    provider = config.provider(capability)
    target = PROVIDERS.get((capability, provider))
    if target is None:
        raise ModelUnavailable(f"capability {capability!r} has no {provider!r} provider")
    options = _options(capability, provider, config)
    key = (capability, provider, tuple(sorted(options.items())))
    with _lock:
        if key not in _instances:
            module, _, cls = target.partition(":")
            _instances[key] = getattr(importlib.import_module(module), cls)(**options)
        return _instances[key]


def enabled_analyzers(config: AnalysisSettings) -> dict[str, Analyzer]:
    return {capability: analyzer_for(capability, config) for capability in config.capabilities}


def fix_for(capability: str, provider: str) -> str:
    """The settings (or install step) that make a capability that cannot load work again."""
    setting = f"DARKROOM_{capability.upper()}_PROVIDER"
    drop = f"or remove {capability} from DARKROOM_ANALYZERS"
    if provider == "azure":
        return (
            f"set DARKROOM_AZURE_VISION_ENDPOINT (the identity needs Cognitive Services User), "
            f"or {setting}=local, {drop}"
        )
    if provider == "tesseract":
        return f"install tesseract-ocr (apt, laptop only), or {setting}=local, {drop}"
    return (
        "install the model files (make setup creates them; make package ships them in "
        f"pipeline/vision/local/models/), or {setting}=azure, {drop}"
    )


def capability_status(config: AnalysisSettings) -> dict[str, dict]:
    """Per enabled capability: provider, model, and whether it can load (with the fix if not)."""
    status: dict[str, dict] = {}
    for capability in config.capabilities:
        provider = config.provider(capability)
        entry: dict = {"provider": provider, "ok": True}
        try:
            analyzer = analyzer_for(capability, config)
            entry["model"] = analyzer.ident
            analyzer.check()
        except Exception as exc:  # a status report never raises
            entry.update(ok=False, error=str(exc)[:500], fix=fix_for(capability, provider))
        status[capability] = entry
    return status


def check_configuration(config: AnalysisSettings) -> None:
    """Start-up check: every enabled capability has a provider that can load; the error names
    each one that cannot, with what fixes it."""
    broken = [
        f"{capability} ({entry['provider']}): {entry['error']} — fix: {entry['fix']}"
        for capability, entry in capability_status(config).items()
        if not entry["ok"]
    ]
    if broken:
        raise ModelUnavailable("; ".join(broken))
