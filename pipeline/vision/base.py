"""One interface for every vision capability, whichever provider answers it.

Each model is a small class (as in Immich's ML service): an identity (`capability`, `name`,
`version`), a lazy thread-safe `load()`, and `predict(image)` that loads on demand and delegates
to `_predict`. Weights come from installed packages only; a missing one fails `load()` with a
message saying which package to install — at start-up, never mid-pipeline with a hub download.

Boxes are `[x, y, w, h]` in pixels of the image passed to `predict` (the analysis image); the
analyze step maps them to the original image's coordinates.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

Box = tuple[float, float, float, float]


class Result(BaseModel):
    """Base of every capability's result model: no field the model does not declare."""

    model_config = ConfigDict(extra="forbid")


# What `predict` returns: the result model of the analyzer's capability (one, or a list of them:
# see pipeline.vision.capabilities).
Prediction = Result | list[Result]


class Usage(BaseModel):
    """What one paid call for an image used (`analysis.usage.<service>`)."""

    model_config = ConfigDict(extra="forbid")
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None  # estimated from the configured prices


class ModelUnavailable(RuntimeError):
    """The model's weights or runtime are not installed: a configuration error at start-up."""


class Analyzer(ABC):
    """Base for every provider of one capability."""

    capability: ClassVar[str]  # the name of a module in pipeline/vision/capabilities
    name: ClassVar[str]
    version: ClassVar[str]

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def loaded(self) -> bool:
        return self._loaded

    def check(self) -> None:
        """Cheap start-up check (files present, settings set) that `load()` can succeed.

        Raises ModelUnavailable. Called when the route is validated, so a misconfigured
        deployment fails at start-up instead of on its first image.
        """
        return None

    def is_transient(self, exc: BaseException) -> bool:
        """Would the same call succeed later (network, throttling)? Then the step is retried
        rather than the capability recorded as failed."""
        return isinstance(exc, ConnectionError | TimeoutError)

    def usage(self) -> tuple[str, Usage] | None:
        """(service, usage) of the paid call that answered this thread's last `predict`, for
        `analysis.usage`; None for a provider that is not paid per call."""
        return None

    def load(self) -> None:
        """Load weights once; concurrent callers wait for the first instead of loading twice."""
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def predict(self, image: np.ndarray) -> Prediction:
        """`image`: RGB, uint8, shape (height, width, 3)."""
        self.load()
        return self._predict(image)

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _predict(self, image: np.ndarray) -> Prediction: ...
