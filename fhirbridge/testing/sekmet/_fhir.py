"""FHIR values as sekmet writes them: code systems, codings, references and instants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]
"""A FHIR resource or workflow result as parsed JSON."""

ENCOUNTER_CLASS_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
"""System of ``Encounter.class`` codings that sekmet writes (IMP, AMB; EMER by this harness)."""

DISCHARGE_DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
"""System of ``Encounter.hospitalization.dischargeDisposition`` as sekmet's discharge writes it
(code only, no display): home, alt-home, other-hcf, hosp, long, aadvice, exp, psy, rehab, snf,
oth."""

VISIT_NUMBER_SYSTEM = "urn:oid:1.2.3.4.5.2"
"""Default ``identifiers.visit`` system of sekmet (Encounter.identifier)."""

CLASS_DISPLAY = {
    "IMP": "inpatient encounter",
    "AMB": "ambulatory",
    "EMER": "emergency",
    "OBSENC": "observation encounter",
    "SS": "short stay",
    "ACUTE": "inpatient acute",
    "NONAC": "inpatient non-acute",
    "PRENC": "pre-admission",
    "HH": "home health",
    "VR": "virtual",
    "FLD": "field",
}
"""Display of each v3 ActCode that :meth:`SekmetServer.admit` may write as ``Encounter.class``."""

SNOMED = "http://snomed.info/sct"


def instant_now() -> str:
    """A FHIR instant in UTC with milliseconds, like the ones sekmet writes."""
    dt = datetime.now(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def reference(rtype: str, rid: str) -> JSON:
    """A FHIR Reference to ``{rtype}/{rid}``."""
    return {"reference": f"{rtype}/{rid}"}


def coding(system: str, code: str, display: str | None = None) -> JSON:
    """A FHIR Coding; ``display`` only when given."""
    out: JSON = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out
