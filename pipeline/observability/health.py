"""Health: can this instance do its work, and if not, exactly what to change.

`GET /api/health` answers 200 only when the settings are valid, the route loads, every step
of it can run (models installed, endpoints set) and storage and Cosmos DB answer; otherwise 503
with each problem and the setting that fixes it. It never raises: on Azure an exception here
would be a bare 500 with the reason only in a log.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from pipeline.framework.registry import route_problems, step_name, validate_route
from pipeline.settings import SettingsError, get_settings, route_setting

log = logging.getLogger("darkroom.health")


def _settings_problems() -> list[str]:
    try:
        get_settings()
    except SettingsError as exc:
        return exc.problems
    return []


def startup_problems() -> list[str]:
    """What would stop images flowing, found without any network call."""
    problems = _settings_problems()
    route = route_setting()
    problems += route_problems(route)
    if not problems:
        try:
            validate_route(route)
        except Exception as exc:
            problems.append(str(exc))
    return problems


def startup_warnings() -> list[str]:
    """What works today but will stop on a known date (a retiring cloud service)."""
    if _settings_problems():
        return []
    from pipeline.vision.providers import retirement_warnings

    settings = get_settings()
    if not any(_safe_name(s) == "analyze" for s in settings.pipeline_steps):
        return []
    return retirement_warnings(settings.analysis)


def log_startup_problems() -> None:
    """At indexing: say in the log what health will say, once. Never raises."""
    try:
        for problem in startup_problems():
            log.error("start-up: %s", problem)
        for warning in startup_warnings():
            log.warning("start-up: %s", warning)
    except Exception:  # indexing must go on whatever this finds
        log.exception("start-up check failed")


def check() -> tuple[bool, dict]:
    route = route_setting()
    report: dict = {"route": [_safe_name(s) for s in route], "checks": {}}

    def probe(name: str, action: Callable[[], object]) -> None:
        started = time.perf_counter()
        try:
            detail = action()
            report["checks"][name] = {"ok": True, **(detail if isinstance(detail, dict) else {})}
        except Exception as exc:  # a health probe reports, it never raises
            report["checks"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:1000]}
        report["checks"][name]["ms"] = round((time.perf_counter() - started) * 1000, 1)

    problems = _settings_problems()
    report["checks"]["settings"] = {"ok": not problems}
    if problems:
        report["checks"]["settings"]["problems"] = problems
    probe("route", lambda: _route_check(route))
    if not problems:
        probe("analyzers", _analyzer_check)
        _probe_services(probe)
    healthy = all(c["ok"] for c in report["checks"].values())
    report["status"] = "healthy" if healthy else "unhealthy"
    if warnings := report["checks"].get("analyzers", {}).get("warnings"):
        report["warnings"] = warnings
    return healthy, report


def _safe_name(spec: str) -> str:
    try:
        return step_name(spec)
    except ValueError:
        return spec


def _route_check(route: tuple[str, ...]) -> None:
    if problems := route_problems(route):
        raise ValueError("; ".join(problems))
    validate_route(route)


def _analyzer_check() -> dict:
    from pipeline.vision.providers import capability_status, retirement_warnings

    settings = get_settings()
    if not any(_safe_name(s) == "analyze" for s in settings.pipeline_steps):
        return {"capabilities": {}}
    status = capability_status(settings.analysis)
    broken = [c for c, entry in status.items() if not entry["ok"]]
    detail: dict = {"ok": not broken, "capabilities": status}
    if warnings := retirement_warnings(settings.analysis):
        detail["warnings"] = warnings  # healthy today; a date to act before
    if broken:
        detail["error"] = f"cannot load: {', '.join(broken)}"
    return detail


def _probe_services(probe) -> None:
    from pipeline.stores.azure_clients import clients

    azure = clients()
    settings = azure.settings
    probe(
        "blob",
        lambda: azure.blob_service.get_container_client(
            settings.upload_container
        ).get_container_properties(),
    )
    probe(
        "queue",
        lambda: azure.queue_service.get_queue_client(
            settings.queue_name(_safe_name(settings.pipeline_steps[0]))
        ).get_queue_properties(),
    )
    probe("cosmos", lambda: azure.images_container.read())


def as_json(report: dict) -> str:
    return json.dumps(report, indent=2)
