"""Health: can this instance reach what it needs, and is its route valid?"""

from __future__ import annotations

import json
import time

from pipeline.azure_clients import clients
from pipeline.registry import step_name, validate_route


def check() -> tuple[bool, dict]:
    azure = clients()
    report: dict = {"route": [step_name(s) for s in azure.settings.pipeline_steps], "checks": {}}

    def probe(name: str, action) -> None:
        started = time.perf_counter()
        try:
            action()
            report["checks"][name] = {"ok": True}
        except Exception as exc:  # a health probe reports, it never raises
            report["checks"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        report["checks"][name]["ms"] = round((time.perf_counter() - started) * 1000, 1)

    probe("route", lambda: validate_route(azure.settings.pipeline_steps))
    probe(
        "blob",
        lambda: azure.blob_service.get_container_client(
            azure.settings.upload_container
        ).get_container_properties(),
    )
    probe(
        "queue",
        lambda: azure.queue_service.get_queue_client(
            azure.settings.queue_name(step_name(azure.settings.pipeline_steps[0]))
        ).get_queue_properties(),
    )
    probe("cosmos", lambda: azure.images_container.read())
    healthy = all(c["ok"] for c in report["checks"].values())
    report["status"] = "healthy" if healthy else "unhealthy"
    return healthy, report


def as_json(report: dict) -> str:
    return json.dumps(report, indent=2)
