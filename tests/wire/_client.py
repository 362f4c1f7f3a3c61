"""The FHIR base URL the wire tests talk to, and the types of their client fixtures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fhirbridge.fhir.client import FhirClient

BASE = "https://ehr.example.org/fhir"
Sleep = Callable[[float], Awaitable[None]]
ClientFactory = Callable[..., FhirClient]
