"""The vision capabilities: one module each, found by looking in this folder.

Each module holds one `capability` (a `pipeline.vision.capability.Capability`). They are found
here at first use, not listed anywhere: adding a module adds a capability to the settings, the
document and its schema, the summary line, drift, the completion event and the page.
(tests/test_capability_module.py adds one to a copy of the project and sees it everywhere.)
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

from pipeline.vision.capability import Capability

_found: dict[str, Capability] | None = None
_lock = threading.Lock()


def capabilities() -> dict[str, Capability]:
    """Every declared capability by name, in rank order (the summary's and the page's)."""
    global _found
    with _lock:
        if _found is None:
            declared = []
            for info in pkgutil.iter_modules(__path__):
                if info.ispkg or info.name.startswith("_"):
                    continue
                module = importlib.import_module(f"{__name__}.{info.name}")
                capability = getattr(module, "capability", None)
                if not isinstance(capability, Capability):
                    raise TypeError(f"{module.__name__} declares no `capability`")
                if capability.name != info.name:
                    raise TypeError(
                        f"{module.__name__} declares {capability.name!r}: a capability's module "
                        "is named after it"
                    )
                declared.append(capability)
            _found = {c.name: c for c in sorted(declared, key=lambda c: (c.rank, c.name))}
        return _found


def capability_names() -> tuple[str, ...]:
    return tuple(capabilities())
