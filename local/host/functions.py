"""Index function_app the way the Functions worker does: triggers, resolved names, callables."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.settings import Settings


@dataclass(frozen=True)
class QueueFunction:
    name: str
    queue: str
    arg_name: str
    call: Callable


@dataclass(frozen=True)
class EventGridBlobFunction:
    name: str
    container: str
    arg_name: str
    connection: str
    call: Callable


@dataclass(frozen=True)
class HttpFunction:
    name: str
    route: str
    methods: tuple[str, ...]
    arg_name: str
    call: Callable


@dataclass(frozen=True)
class TimerFunction:
    name: str
    schedule: str  # NCRONTAB, six fields, resolved
    arg_name: str
    call: Callable


@dataclass
class FunctionIndex:
    queues: list[QueueFunction] = field(default_factory=list)
    timers: list[TimerFunction] = field(default_factory=list)
    event_grid: dict[str, EventGridBlobFunction] = field(default_factory=dict)
    http: dict[str, HttpFunction] = field(default_factory=dict)


def index_app(settings: Settings, module: str = "function_app") -> FunctionIndex:
    """Import the app once and classify its functions; `%SETTING%` names resolved here."""
    app = importlib.import_module(module).app
    found = FunctionIndex()
    for fn in app.get_functions():  # builds the function list: call once per process
        trigger = fn.get_trigger()
        name = fn.get_function_name()
        call = fn.get_user_function()
        if trigger.type == "queueTrigger":
            found.queues.append(
                QueueFunction(name, settings.resolve(trigger.queue_name), trigger.name, call)
            )
        elif trigger.type == "blobTrigger":
            if str(getattr(trigger, "source", "")) != "EventGrid":
                raise ValueError(f"{name}: only Event Grid blob triggers run on Flex Consumption")
            container = settings.resolve(trigger.path).split("/", 1)[0]
            found.event_grid[name] = EventGridBlobFunction(
                name, container, trigger.name, trigger.connection, call
            )
        elif trigger.type == "httpTrigger":
            methods = tuple(str(getattr(m, "value", m)) for m in trigger.methods or ())
            route = (trigger.route or name).strip("/")
            found.http[route] = HttpFunction(name, route, methods, trigger.name, call)
        elif trigger.type == "timerTrigger":
            schedule = settings.resolve(trigger.schedule)
            found.timers.append(TimerFunction(name, schedule, trigger.name, call))
        else:
            raise ValueError(f"{name}: the local host does not run {trigger.type} triggers")
    return found


def local_connection_string(settings: Settings, connection: str) -> str:
    """The connection string a binding's connection names: the local host speaks to emulators."""
    value = settings.connection(connection).connection_string
    if not value:
        raise RuntimeError(
            f"the local host needs {connection} as a connection string (the emulators'); "
            "identity-based connections are for Azure"
        )
    return value
