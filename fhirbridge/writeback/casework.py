"""Case-management builders: a social need's referral ServiceRequest.

Its write (conditional create on its identifier) and the CarePlan's completion (``If-Match``)
are action handlers in :mod:`fhirbridge.writeback.actions`, so both write paths do them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from fhirbridge.errors import ProfileError
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    IDENTIFIER_SYSTEM,
    CreateReferral,
)

__all__ = ["PATIENT_REFERRAL", "build_referral"]

#: SNOMED CT 3457005 "Patient referral": the marker the referral tracking recognises.
PATIENT_REFERRAL = {
    "system": "http://snomed.info/sct",
    "code": "3457005",
    "display": "Patient referral",
}


def build_referral(
    action: CreateReferral, *, authored_on: datetime, requester: str
) -> dict[str, Any]:
    """The referral ServiceRequest (SDOHCC ServiceRequest shape), validated."""
    categories: list[dict[str, Any]] = [
        {"coding": [{"system": system, "code": code, **({"display": d} if d else {})}]}
        for system, code, d in action.categories
    ]
    categories.append({"coding": [PATIENT_REFERRAL]})
    data: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "meta": {"tag": [{"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": action.identifier}],
        "status": "active",
        "intent": "order",
        "priority": "routine",
        "category": categories,
        "code": {"coding": [PATIENT_REFERRAL], "text": action.display},
        "subject": {"reference": action.patient},
        "occurrenceDateTime": action.occurrence.isoformat(),
        "authoredOn": authored_on.isoformat(),
        "requester": {"reference": requester},
        "reasonReference": [{"reference": action.reason}],
        "note": [{"text": f"social need: {action.need}; rule: {action.rule_id}"}],
    }
    if action.encounter:
        data["encounter"] = {"reference": action.encounter}
    if action.performer:
        data["performer"] = [{"reference": action.performer}]
    try:
        model = ServiceRequest.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"ServiceRequest is not valid FHIR: {exc.errors()[0]['msg']}") from exc
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_none=True, by_alias=True)
    return dumped
