"""The writeback stage: planned actions written to the FHIR server, exactly once.

- :mod:`fhirbridge.writeback.outbox`: actions to durable outbox items and back;
- :mod:`fhirbridge.writeback.writer`: the writer that drains the outbox;
- :mod:`fhirbridge.writeback.actions`: how each kind of item is written;
- :mod:`fhirbridge.writeback.build`: the Tasks, CarePlans and Provenance it sends.

Nothing is re-exported here: import from the modules.
"""

from __future__ import annotations

__all__: list[str] = []
