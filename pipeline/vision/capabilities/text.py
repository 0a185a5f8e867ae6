"""text: what is written in the image (OCR), line by line with boxes.

Private: the completion event says only whether there is text, never what it says (it may be
a name or a licence plate). Slow on a CPU, so the sync path leaves it to the queue by default.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.vision.base import Box, Result
from pipeline.vision.capability import Capability, Drawing, Option


class TextLine(Result):
    text: str
    # null when the provider reads the line but cannot place it (GPT vision: `openai`)
    box: Box | None = None
    confidence: float = Field(ge=0, le=1)


class Text(Result):
    full: str
    lines: list[TextLine]


def _snippet(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _summary(text: dict | None) -> str | None:
    full = (text or {}).get("full", "").strip()
    return f"text: {_snippet(full)}" if full else None


capability = Capability(
    name="text",
    result=Text,
    description="Text read in the image (OCR).",
    providers={
        "local": "pipeline.vision.local.text_ppocr:PPOCRReader",
        "tesseract": "pipeline.vision.local.text_tesseract:TesseractReader",
        "azure": "pipeline.vision.cloud.azure_vision:AzureReader",
        "openai": "pipeline.vision.cloud.openai_vision:OpenAIReader",
        "docintel": "pipeline.vision.cloud.docintel:DocIntelReader",
    },
    options=(
        Option("language", "DARKROOM_TEXT_LANGUAGE", "eng", providers=("local", "tesseract")),
    ),
    rank=40,
    summarize=_summary,
    outcome=lambda text: "found" if ((text or {}).get("full") or "").strip() else "none",
    scores=lambda text: tuple(
        float(line["confidence"]) for line in (text or {}).get("lines") or ()
    ),
    event=("text_present", lambda text: None if text is None else bool(text.get("full"))),
    words=lambda text: [text["full"]] if text and text.get("full") else [],
    private=True,
    sync=False,
    drawing=Drawing(kind="text", title="Text", colour="#ff5ad1", shown=False),
)
