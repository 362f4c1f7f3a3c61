"""fhirbridge: a FHIR-native care coordination integration engine."""

from __future__ import annotations

__version__ = "0.1.0"
