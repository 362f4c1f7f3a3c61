"""fhirbridge: a FHIR-native care coordination integration engine.

The public API::

    from fhirbridge import Bridge, load_config

    async with Bridge.from_config(load_config("fhirbridge.yaml")) as bridge:
        stats = await bridge.run_once()

Stages are usable alone: :mod:`fhirbridge.detect`, :mod:`fhirbridge.rules`,
:mod:`fhirbridge.risk`, :mod:`fhirbridge.fhir`, :mod:`fhirbridge.store`.
"""

from __future__ import annotations

from fhirbridge.clock import Clock, FixedClock, SystemClock
from fhirbridge.config import Config, load_config
from fhirbridge.engine import Bridge, RunStats
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
from fhirbridge.fhir import FhirClient, SyncFhirClient
from fhirbridge.values import (
    CancelTasks,
    CompleteTasks,
    CreateTask,
    Plan,
    ResourceVersion,
    Transition,
    TransitionKind,
)

__version__ = "0.1.0"

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
