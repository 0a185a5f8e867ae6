"""The one settings reader: typed values from the environment, problems collected, catalog kept.

Every area of the app reads its own settings with it, beside its code (`pipeline/api/settings.py`,
`pipeline/vision/settings.py`, …); `pipeline.settings` composes them into one `Settings`. Each
name the reader is asked for lands in its catalog (`SettingSpec`), so the catalog of every knob
— which the infra tests hold the Bicep to — is derived from the code that reads it, never kept
by hand. This module imports nothing of the app: every area may use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(ValueError):
    """One or more settings are invalid: each line names a setting and what it must be."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SettingSpec:
    """One app setting as the code reads it (the catalog entry)."""

    name: str
    default: str | None  # None: no default (unset means "off" or, if required, an error)
    required: bool = False  # must be set on Azure: no usable default, or a %binding% expression
    local_only: bool = False  # only the laptop (local host, emulators) reads it
    secret: bool = False  # never logged, never printed, never set by Bicep in plain text


class SettingReader:
    """Reads typed settings from one mapping, collecting problems and the catalog as it goes."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.catalog: dict[str, SettingSpec] = {}

    def _raw(self, name: str, default: object, **flags: bool) -> str:
        self.catalog.setdefault(
            name, SettingSpec(name, None if default is None else str(default), **flags)
        )
        return str(self.env.get(name, "")).strip()

    def text(self, name: str, default: str, choices: tuple[str, ...] = (), **flags: bool) -> str:
        value = self._raw(name, default, **flags) or default
        if choices and value.lower() not in choices:
            self.problems.append(f"{name} must be one of {', '.join(choices)}, not {value!r}")
            return default
        return value.lower() if choices else value

    def optional(self, name: str, **flags: bool) -> str | None:
        return self._raw(name, None, **flags) or None

    def flag(self, name: str, default: bool, **flags: bool) -> bool:
        raw = self._raw(name, str(default).lower(), **flags).lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.problems.append(f"{name} must be true or false, not {raw!r}")
        return default

    def number(
        self,
        name: str,
        default: float,
        cast: type = int,
        minimum: float | None = None,
        maximum: float | None = None,
        **flags: bool,
    ):
        raw = self._raw(name, default, **flags)
        if not raw:
            return default
        try:
            value = cast(raw)
        except ValueError:
            kind = "a whole number" if cast is int else "a number"
            self.problems.append(f"{name} must be {kind}, not {raw!r}")
            return default
        if isinstance(value, float) and not math.isfinite(value):
            self.problems.append(f"{name} must be a finite number, not {raw!r}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.problems.append(f"{name} must be {bounds}, not {raw}")
            return default
        return value
