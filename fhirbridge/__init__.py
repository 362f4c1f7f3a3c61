"""fhirbridge: a FHIR-native care coordination integration engine.

The public API::

    from fhirbridge import Bridge, load_config

    async with Bridge.from_config(load_config("fhirbridge.yaml")) as bridge:
        stats = await bridge.run_once()

Stages are usable alone: :mod:`fhirbridge.detect`, :mod:`fhirbridge.rules`,
:mod:`fhirbridge.risk`, :mod:`fhirbridge.fhir`, :mod:`fhirbridge.store`.
"""

from __future__ import annotations

import typing

from fhirbridge.clock import Clock, FixedClock, SystemClock
from fhirbridge.errors import (
    AuthError,
    ConfigError,
    FhirBridgeError,
    FhirError,
    FhirTimeoutError,
    InvalidResource,
    MultipleMatches,
    ProfileError,
    RateLimited,
    ResourceNotFound,
    RuleError,
    ServerError,
    StoreError,
    TransportError,
    VersionConflict,
)
from fhirbridge.values import (
    CancelTasks,
    CompleteTasks,
    CreateTask,
    Plan,
    ResourceVersion,
    Transition,
    TransitionKind,
)

if typing.TYPE_CHECKING:
    from fhirbridge.config import Config, load_config
    from fhirbridge.engine import Bridge, RunStats
    from fhirbridge.fhir import FhirClient, SyncFhirClient

__version__ = "0.1.0"

#: Names whose modules are heavy (pydantic settings, fhir.resources, httpx): imported on
#: first use, so ``fhirbridge --help`` and scripts that need one stage start fast.
_LAZY = {
    "Bridge": "fhirbridge.engine",
    "RunStats": "fhirbridge.engine",
    "Config": "fhirbridge.config",
    "load_config": "fhirbridge.config",
    "FhirClient": "fhirbridge.fhir",
    "SyncFhirClient": "fhirbridge.fhir",
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fhirbridge' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AuthError",
    "Bridge",
    "CancelTasks",
    "Clock",
    "CompleteTasks",
    "Config",
    "ConfigError",
    "CreateTask",
    "FhirBridgeError",
    "FhirClient",
    "FhirError",
    "FhirTimeoutError",
    "FixedClock",
    "InvalidResource",
    "MultipleMatches",
    "Plan",
    "ProfileError",
    "RateLimited",
    "ResourceNotFound",
    "ResourceVersion",
    "RuleError",
    "RunStats",
    "ServerError",
    "StoreError",
    "SyncFhirClient",
    "SystemClock",
    "Transition",
    "TransitionKind",
    "TransportError",
    "VersionConflict",
    "__version__",
    "load_config",
]
