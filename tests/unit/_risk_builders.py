"""FHIR JSON builders shared by the risk score tests (test_risk_lace.py, test_risk_hospital.py).

Each test file binds :func:`build_encounter` to its own admission instant and length of stay.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fhirbridge.testing.builders import encounter, fhir_instant

PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"

#: A FHIR dateTime.
stamp = fhir_instant


def build_encounter(
    eid: str = "idx",
    *,
    start: datetime | str | None,
    days: int | None,
    cls: str = "IMP",
    end: datetime | str | None = None,
    status: str = "finished",
    patient: str = "Patient/p1",
    **extra: Any,
) -> dict[str, Any]:
    """An Encounter of ``patient``; ``days`` sets the end that many days (and 2 hours) after a
    ``start`` given as a datetime, unless ``end`` is given. The period has only what is set."""
    if end is None and days is not None and isinstance(start, datetime):
        end = start + timedelta(days=days, hours=2)
    ends = (("start", start), ("end", end))
    period = {key: fhir_instant(value) for key, value in ends if value is not None}
    return encounter(eid, patient=patient, cls=cls, status=status, period=period, **extra)
