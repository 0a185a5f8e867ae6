"""What a vision capability declares about itself, so that nothing else names it.

A capability (tags, objects, faces, text, moderation, …) is one module in
`pipeline/vision/capabilities/` holding one `Capability`: its name, the result model of
`analysis.<name>`, the providers that answer it, its settings, the part of the one-line summary
it writes, what drift watches in it, what the completion event says of it and how the page draws
it. The analyze step, the document and OpenAPI schema (`Analysis`), the provider table, the
settings catalog, drift, the completion event and the web page all read these declarations, so
adding a capability is adding one module — as a Roboflow workflow block is one manifest and an
Immich model one class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pipeline.setting_reader import SettingReader

# What drift and the metrics record of one image's answer: found/none for most capabilities,
# safe/unsafe for a verdict; `error` when the capability failed.
Outcome = Literal["found", "none", "safe", "unsafe", "error"]


@dataclass(frozen=True)
class Option:
    """One setting of a capability, handed to its providers as a constructor keyword.

    Read through the one settings reader, so it is in the settings catalog like every other."""

    keyword: str  # the provider's constructor keyword
    setting: str  # the app setting, e.g. DARKROOM_TAGS_TOP_K
    default: int | float | str
    minimum: float | None = None
    maximum: float | None = None
    providers: tuple[str, ...] | None = None  # the providers that take it; None: every one

    def read(self, reader: SettingReader) -> int | float | str:
        if isinstance(self.default, str):
            return reader.text(self.setting, self.default)
        return reader.number(
            self.setting, self.default, type(self.default), self.minimum, self.maximum
        )

    def applies_to(self, provider: str) -> bool:
        return self.providers is None or provider in self.providers


class Drawing(BaseModel):
    """How the web page shows a capability (served by `GET /api/capabilities`).

    - `labels`: names with scores (`[{name, score}]`);
    - `boxes`: names with scores, and their boxes over the photo (`[{name, score, box}]`);
    - `text`: the full text, and each line's box over the photo (`{full, lines: [{text, box}]}`);
    - `verdict`: a verdict word and its score (`{verdict, score}`);
    - `faces`: boxes and landmarks, with the people recognize found in them;
    - `mask`: a class mask laid over the photo, and the share each class covers (a segmenting
      model step);
    - `sentence`: one line of text (`{text}`), e.g. a caption."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["labels", "boxes", "text", "verdict", "faces", "mask", "sentence"]
    title: str
    colour: str | None = None  # of its boxes over the photo (box kinds only)
    shown: bool = True  # its boxes are drawn until the viewer turns them off


def _no_summary(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Capability:
    """One capability's declaration (see the module docstring)."""

    name: str  # the key under `analysis`, in DARKROOM_ANALYZERS, in DARKROOM_<NAME>_PROVIDER
    result: Any  # the type of `analysis.<name>` (a pydantic model, or a list of one)
    description: str  # of `analysis.<name>` in the document and OpenAPI schema
    providers: Mapping[str, str]  # provider name → "module:Class"; `local` is the default
    drawing: Drawing
    rank: int  # its place in the summary line, on the page and in the document (low first)
    options: tuple[Option, ...] = ()
    # The summary line's part for this capability's value, None to say nothing.
    summarize: Callable[[Any], str | None] = _no_summary
    # Drift and metrics: the outcome of one image's value, and the scores whose distribution
    # is watched (see pipeline.observability.drift).
    outcome: Callable[[Any], Outcome] = lambda value: "found" if value else "none"
    scores: Callable[[Any], tuple[float, ...]] = lambda value: ()
    positive: Outcome = "found"  # the outcome that counts as "a finding"
    # The completion event's `summary` entry: (key, value of the analysis value, or of None
    # when the capability did not answer).
    event: tuple[str, Callable[[Any], Any]] | None = None
    private: bool = False  # its value never reaches a completion event's summary lines
    # Search by words (GET /api/images?q=): the phrases of its value a caller may search for
    # (names, a caption, read text); none for what words cannot say (boxes, scores).
    words: Callable[[Any], list[str]] = lambda value: []
    sync: bool = True  # answered by the sync path (POST /api/analyze) unless configured otherwise
    # in DARKROOM_ANALYZERS unless configured otherwise (False: no offline provider answers it)
    enabled_by_default: bool = True

    def provider_setting(self) -> str:
        return f"DARKROOM_{self.name.upper()}_PROVIDER"
