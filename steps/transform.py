"""transform: the derivative that may leave the building.

From the ORIGINAL (orientation baked in) rather than the analysis image, so quality is the
publisher's choice; faces — and text, when asked — anonymised with the analyze step's boxes;
downscaled; re-encoded with only allow-listed metadata. Written under a deterministic name, so
a redelivered message overwrites its own derivative instead of adding one. If the policy asks
for anonymisation but faces are unknown (analyze absent or its face model failed), nothing is
published: an image that might show a face is withheld with the reason, never published raw.
"""

from __future__ import annotations

import io
from typing import Any

from pipeline.step_api import StepContext, StepManifest
from steps.imaging.anonymize import anonymize
from steps.imaging.decode import decode_upright, open_image
from steps.imaging.metadata import allowed_metadata
from steps.imaging.pixels import fit_size

manifest = StepManifest(
    name="transform",
    version="1.0.0",
    description="Publishable derivative: faces anonymised, downscaled, metadata stripped.",
    reads=("image",),
    writes=("published",),
)

_MIME = {"jpeg": "image/jpeg", "webp": "image/webp"}


def _regions(analysis: dict, key: str, scale: float) -> list[list[float]]:
    items = analysis[key]["lines"] if key == "text" else analysis[key]
    return [[v * scale for v in item["box"]] for item in items]


def run(ctx: StepContext) -> dict[str, Any]:
    policy = ctx.settings.publish
    analysis = ctx.fields.get("analysis") or {}
    if policy.faces != "off" and "faces" not in analysis:
        why = (analysis.get("errors") or {}).get("faces") or "face detection did not run"
        return {"published": {"withheld": f"faces must be {policy.faces}ed, but {why}"}}

    data = ctx.read_source()
    opened = open_image(data, ctx.fields["image"]["format"], ctx.settings.limits)
    width, height = opened.upright_size
    size = fit_size(width, height, policy.max_side)
    image = decode_upright(opened, size)
    scale = size[0] / width

    faces = _regions(analysis, "faces", scale) if policy.faces != "off" else []
    text = _regions(analysis, "text", scale) if policy.redact_text and "text" in analysis else []
    mode = policy.faces if policy.faces != "off" else "pixelate"
    published = anonymize(image, [*faces, *text], mode)

    out = io.BytesIO()
    extra, kept = allowed_metadata(opened.image, policy.keep_metadata)
    if policy.format == "webp":
        published.save(out, "WEBP", quality=policy.quality, method=4, **extra)
    else:
        published.save(
            out, "JPEG", quality=policy.quality, optimize=True, progressive=True, **extra
        )
    ref = ctx.put_artifact(
        f"published.{'jpg' if policy.format == 'jpeg' else 'webp'}",
        out.getvalue(),
        _MIME[policy.format],
        public=True,
    )
    return {
        "published": {
            **ref.model_dump(),
            "width": published.width,
            "height": published.height,
            "anonymised": {
                "mode": mode if (faces or text) else "off",
                "faces": len(faces),
                "text_regions": len(text),
            },
            "metadata": kept,
        }
    }
