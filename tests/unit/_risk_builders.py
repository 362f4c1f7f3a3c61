"""FHIR JSON builders shared by the risk score tests (test_risk_lace.py, test_risk_hospital.py).

Each test file binds :func:`build_encounter` to its own admission instant and length of stay.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PRIORITY = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"


def stamp(moment: datetime) -> str:
    """A FHIR dateTime."""
    return moment.isoformat().replace("+00:00", "Z")


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
    ``start`` given as a datetime, unless ``end`` is given."""
    if end is None and days is not None and isinstance(start, datetime):
        end = start + timedelta(days=days, hours=2)
    period: dict[str, str] = {}
    if start is not None:
        period["start"] = start if isinstance(start, str) else stamp(start)
    if end is not None:
        period["end"] = end if isinstance(end, str) else stamp(end)
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": ACT_CODE, "code": cls},
        "subject": {"reference": patient},
        "period": period,
        **extra,
    }
