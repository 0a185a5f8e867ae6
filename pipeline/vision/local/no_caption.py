"""The `local` provider of `caption`: there is none that deploys (no captioning model ships in a
pip wheel small enough for the app), so it fails the start-up check with the fix."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.vision.base import Analyzer, ModelUnavailable

NO_OFFLINE_CAPTION = (
    "no offline model writes captions: set DARKROOM_CAPTION_PROVIDER=azure (Image Analysis "
    "4.0, in the regions that offer captions), or remove caption from DARKROOM_ANALYZERS"
)


class NoOfflineCaptioner(Analyzer):
    capability = "caption"
    name = "none"
    version = "0"

    def __init__(self, **options: Any) -> None:
        super().__init__()

    def check(self) -> None:
        raise ModelUnavailable(NO_OFFLINE_CAPTION)

    def _load(self) -> None:
        raise ModelUnavailable(NO_OFFLINE_CAPTION)

    def _predict(self, image: np.ndarray) -> Any:  # pragma: no cover - _load always raises
        raise ModelUnavailable(NO_OFFLINE_CAPTION)
