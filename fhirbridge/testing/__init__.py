"""Test helpers for code that uses fhirbridge, shipped with it.

- :class:`FakeFhirServer`: an in-memory FHIR R4 server on ``httpx.MockTransport`` (read,
  search, conditional create, ``If-Match`` updates, transactions), strict about what it does
  not implement, counting requests;
- :class:`MemoryStore`: a journal that keeps nothing on disk;
- :mod:`fhirbridge.testing.builders`: FHIR R4 JSON for what the engine reads, one builder
  per resource with deterministic defaults (:func:`patient`, :func:`encounter`,
  :func:`condition`, :func:`observation`, :func:`service_request`, :func:`task`,
  :func:`care_plan`, :func:`coverage`, :func:`appointment`) and :func:`revise` for the next
  version of one; the code systems they use are constants of that module;
- :mod:`fhirbridge.testing.sekmet`: a real FHIR test server (``sekmet-fhir``) on loopback,
  for end-to-end tests.

A rule test needs no server and no database: build the resources, detect, evaluate::

    from fhirbridge.testing import encounter, revise

    before = encounter(status="in-progress", meta={"versionId": "1"})
    after = revise(before, version=2, status="finished", period={...})

The README's "Testing your own rules" section shows a whole one.
"""

from __future__ import annotations

from fhirbridge.store.memory import MemoryStore
from fhirbridge.testing.builders import (
    appointment,
    care_plan,
    condition,
    coverage,
    encounter,
    observation,
    patient,
    revise,
    service_request,
    task,
)
from fhirbridge.testing.fhirfake import FakeFhirServer

__all__ = [
    "FakeFhirServer",
    "MemoryStore",
    "appointment",
    "care_plan",
    "condition",
    "coverage",
    "encounter",
    "observation",
    "patient",
    "revise",
    "service_request",
    "task",
]
