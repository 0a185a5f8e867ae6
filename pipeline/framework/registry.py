"""Find steps, load them, and check a route before any image flows.

A route entry is a step module: a bare name means `steps.<name>`; a dotted path names a module
anywhere on the import path (a team's own package, a test module). A bare name that is no module
but has DARKROOM_MODEL_<NAME>__* settings is a model step (pipeline.vision.model_step). Either way
the entry's last name is the step's name, which the queue name, the function name and the
document key derive from — so a message can be routed without importing anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.framework.step_api import StepContext, StepManifest, TryLater, step_name
from pipeline.settings import PROJECT_ROOT, Settings, get_settings
from pipeline.vision.model_step.spec import ModelStepSpec
from pipeline.vision.model_step.step import check_model_step, manifest_for, run_model_step

# Fields present before any step runs (ingest puts the source blob in every message).
INITIAL_FIELDS = frozenset({"source"})


class RouteError(ValueError):
    """A configured route cannot run: a start-up error, reported before any image is taken."""


__all__ = [
    "LoadedStep",
    "RouteError",
    "StepUnavailable",
    "ensure_ready",
    "load_step",
    "registered_step_specs",
    "route_problems",
    "step_name",
    "validate_route",
]


@dataclass(frozen=True)
class LoadedStep:
    spec: str
    manifest: StepManifest
    run: Callable[[StepContext], Mapping[str, Any]]
    check: Callable[[Settings], None] | None = None  # optional start-up check of the module

    @property
    def name(self) -> str:
        return self.manifest.name


# The built-in steps' package. Found by name, as a team's own steps are: the framework never
# imports a step module (a test over the import graph holds it to that).
BUILTIN_STEPS = "steps"


def _module_path(spec: str) -> str:
    return spec if "." in spec else f"{BUILTIN_STEPS}.{spec}"


def builtin_step_specs() -> list[str]:
    """Plain modules directly in steps/ are steps; a sub-package there would be a helper."""
    package = importlib.util.find_spec(BUILTIN_STEPS)
    return sorted(
        info.name
        for info in pkgutil.iter_modules(package.submodule_search_locations if package else [])
        if not info.ispkg and not info.name.startswith("_")
    )


_cache: dict[str, LoadedStep] = {}
_lock = threading.Lock()


def load_step(spec: str, settings: Settings | None = None) -> LoadedStep:
    """The step a route entry names: a module (built-in or dotted path), or — for a bare name
    that is no module — a model step its DARKROOM_MODEL_<NAME>__* settings describe."""
    name = step_name(spec)
    if "." not in spec and importlib.util.find_spec(_module_path(spec)) is None:
        model = (settings or get_settings()).model_steps.get(name)
        if model is not None:
            return _model_step(spec, model)
    with _lock:
        if spec in _cache:
            return _cache[spec]
        try:
            module = importlib.import_module(_module_path(spec))
        except ModuleNotFoundError as exc:
            hint = (
                f", and no DARKROOM_MODEL_{name.upper()}__TASK describes a model step"
                if "." not in spec
                else ""
            )
            raise RouteError(
                f"step {spec!r}: no module {_module_path(spec)!r} ({exc}){hint}"
            ) from exc
        manifest = getattr(module, "manifest", None)
        run = getattr(module, "run", None)
        if not isinstance(manifest, StepManifest) or not callable(run):
            raise RouteError(f"step {spec!r}: module must define `manifest` and `run(ctx)`")
        if manifest.name != name:
            raise RouteError(f"step {spec!r}: manifest.name {manifest.name!r} != {name!r}")
        loaded = _cache[spec] = LoadedStep(spec, manifest, run, getattr(module, "check", None))
        return loaded


_model_cache: dict[ModelStepSpec, LoadedStep] = {}


def _model_step(spec: str, model: ModelStepSpec) -> LoadedStep:
    """A model step as a LoadedStep: the same manifest, run and check a module step has."""
    with _lock:
        if model not in _model_cache:
            _model_cache[model] = LoadedStep(
                spec,
                manifest_for(model),
                lambda ctx: run_model_step(ctx, model, PROJECT_ROOT),
                lambda settings: check_model_step(model, PROJECT_ROOT),
            )
        return _model_cache[model]


class StepUnavailable(RuntimeError):
    """A step of this deployment cannot run (a model or setting is missing): configuration,
    not the image. Images that reach it end `failed` with this reason and their message waits in
    poison for `poison replay` once the deployment is fixed."""


def validate_route(
    route: Iterable[str], settings: Settings | None = None, check_steps: bool = True
) -> list[LoadedStep]:
    """Every step loads, names are unique, and each step's inputs are written before it runs.

    `check_steps` also runs each step's own `check()` (models installed, endpoints set), raising
    StepUnavailable with the step's reason."""
    loaded = [load_step(spec) for spec in route]
    if not loaded:
        raise RouteError("PIPELINE_STEPS is empty: name at least one step")
    available = set(INITIAL_FIELDS)
    seen: set[str] = set()
    for step in loaded:
        if step.name in seen:
            raise RouteError(f"step {step.name!r} appears twice in the route")
        seen.add(step.name)
        if missing := set(step.manifest.reads) - available:
            raise RouteError(
                f"step {step.name!r} reads {sorted(missing)}, which no earlier step writes"
            )
        available.update(step.manifest.writes)
        if check_steps:
            ensure_ready(step, settings or get_settings())
    return loaded


_ready: set[LoadedStep] = set()  # model steps share a name across settings: keyed by the step


def ensure_ready(step: LoadedStep, settings: Settings) -> None:
    """Run the step's own start-up check; a pass is remembered for the process, a failure is
    not (the next image checks again, so a fixed deployment recovers without a restart)."""
    if step.check is None or step in _ready:
        return
    try:
        step.check(settings)
    except TryLater:
        raise  # a model server out of reach for now: transient, not a broken deployment
    except Exception as exc:
        raise StepUnavailable(f"step {step.name} cannot run: {exc}") from exc
    _ready.add(step)


def _specs_by_name(route: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    problems: list[str] = []
    specs: dict[str, str] = {}
    for spec in [*builtin_step_specs(), *route]:
        try:
            name = step_name(spec)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if name in specs and specs[name] != spec:
            problems.append(f"two steps named {name!r}: {specs[name]!r} and {spec!r}")
            continue
        specs[name] = spec
    return specs, problems


def registered_step_specs(route: Iterable[str]) -> list[str]:
    """Specs that get a queue function: every built-in step plus the configured route. Never
    raises.

    Built-ins are registered even when the route skips them, so messages already in flight on
    an older route still find a listener after `PIPELINE_STEPS` changes; a route step is
    registered even when its module does not load, so its images end `failed` with the reason
    instead of waiting on a queue nobody reads. Indexing must not fail: an import error there
    leaves the app with no functions at all, health included, and the reason only in a log.
    `route_problems` says what is wrong; health reports it.
    """
    return list(_specs_by_name(tuple(route))[0].values())


def route_problems(route: Iterable[str]) -> list[str]:
    """What is wrong with a route's structure (names, modules, reads before writes)."""
    route = tuple(route)
    problems = _specs_by_name(route)[1]
    try:
        validate_route(route, check_steps=False)
    except (RouteError, ValueError) as exc:
        problems.append(str(exc))
    return problems
