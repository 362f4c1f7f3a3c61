"""Test helpers for code that uses fhirbridge, shipped with it.

- :class:`FakeFhirServer`: an in-memory FHIR R4 server on ``httpx.MockTransport`` (read,
  search, conditional create, ``If-Match`` updates, transactions), strict about what it does
  not implement, counting requests;
- :class:`MemoryStore`: a journal that keeps nothing on disk;
- :mod:`fhirbridge.testing.sekmet`: a real FHIR test server (``sekmet-fhir``) on loopback,
  for end-to-end tests.
"""

from __future__ import annotations

from fhirbridge.store.memory import MemoryStore
from fhirbridge.testing.fhirfake import FakeFhirServer

__all__ = ["FakeFhirServer", "MemoryStore"]
