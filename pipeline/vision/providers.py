"""Which class answers which capability (as each capability declares its providers); one
instance per worker process.

Providers are named by import path and imported on first use, so the Azure SDK is only imported
when a capability is configured for `azure`, and a local model's runtime (onnxruntime, OpenCV,
Node) only when that capability is enabled.
"""

from __future__ import annotations

import importlib
import threading

from pipeline.vision.base import Analyzer, ModelUnavailable
from pipeline.vision.capabilities import capabilities
from pipeline.vision.settings import AnalysisSettings


def provider_path(capability: str, provider: str) -> str | None:
    """The provider's `module:Class`, as the capability declares it (None: no such one)."""
    return capabilities()[capability].providers.get(provider)


def _options(capability: str, provider: str, config: AnalysisSettings) -> dict:
    """Constructor options: the service's connection for a cloud provider, then the options
    the capability declares for this provider."""
    services = {
        "azure": lambda: {"endpoint": config.azure.endpoint, "key": config.azure.key},
        "docintel": lambda: {"settings": config.docintel},
        "face": lambda: {"settings": config.face},
        "openai": lambda: {"settings": config.openai},
    }
    base = services[provider]() if provider in services else {}
    return {**base, **config.options_for(capability)}


_instances: dict[tuple, Analyzer] = {}
_lock = threading.Lock()


def analyzer_for(capability: str, config: AnalysisSettings) -> Analyzer:
    if capability not in capabilities():
        known = ", ".join(capabilities())
        raise ModelUnavailable(f"unknown capability {capability!r}; known: {known}")
    provider = config.provider(capability)
    target = provider_path(capability, provider)
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
    if provider == "openai":
        return (
            "set DARKROOM_OPENAI_ENDPOINT and DARKROOM_OPENAI_DEPLOYMENT (a GPT vision deployment; "
            f"the identity needs Cognitive Services OpenAI User), or {setting}=local, {drop}"
        )
    if provider == "docintel":
        return (
            "set DARKROOM_DOCINTEL_ENDPOINT (the identity needs Cognitive Services User), "
            f"or {setting}=local, {drop}"
        )
    if provider == "face":
        return (
            "set DARKROOM_FACE_ENDPOINT (an Azure AI Face resource; with no DARKROOM_FACE_KEY the "
            f"identity needs Cognitive Services User), or {setting}=local, {drop}"
        )
    if provider == "tesseract":
        return f"install tesseract-ocr (apt, laptop only), or {setting}=local, {drop}"
    return (
        "install the model files (make setup creates them; make package ships them in "
        f"pipeline/vision/local/models/), or {setting}=azure, {drop}"
    )


# Providers whose service has an end date, and what Microsoft names in its place per capability
# (Azure AI Vision's migration guide: Image Analysis 4.0, and Custom Vision, retire on
# 2028-09-25; every call fails after that day).
RETIRING = {"azure": "2028-09-25"}
REPLACEMENT = {"text": "docintel", "faces": "face"}  # else a GPT vision deployment: openai


def retirement_warnings(config: AnalysisSettings) -> list[str]:
    """One line per enabled capability on a retiring service, naming the setting to change."""
    warnings = []
    for capability in config.capabilities:
        provider = config.provider(capability)
        if ends := RETIRING.get(provider):
            instead = REPLACEMENT.get(capability, "openai")
            warnings.append(
                f"{capability} uses Azure AI Vision Image Analysis 4.0, which Microsoft retires "
                f"on {ends} (every call fails after it): set "
                f"DARKROOM_{capability.upper()}_PROVIDER={instead} before then"
            )
    return warnings


def capability_status(config: AnalysisSettings) -> dict[str, dict]:
    """Per enabled capability: provider, model, and whether it can load (with the fix if not)."""
    status: dict[str, dict] = {}
    for capability in config.capabilities:
        provider = config.provider(capability)
        entry: dict = {"provider": provider, "ok": True}
        if ends := RETIRING.get(provider):
            entry["retires"] = ends
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
