"""The sources stage: where resource versions come from.

- :mod:`fhirbridge.sources.poll`: ``_lastUpdated`` polling from a watermark;
- :mod:`fhirbridge.sources.bulk`: bulk ``$export`` backfill;
- :mod:`fhirbridge.sources.hl7v2`: HL7 v2 ADT, from files or an MLLP listener.

The notification receiver is :mod:`fhirbridge.receiver`. Nothing is re-exported here: each
source is imported from its module, so loading one does not load the others.
"""

from __future__ import annotations

__all__: list[str] = []
