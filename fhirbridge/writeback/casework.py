"""Case-management writes: a social need's referral ServiceRequest, and the CarePlan's
completion. Both idempotent: the referral by conditional create on its identifier, the
completion by ``If-Match`` (re-read on a conflict, nothing to do once completed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from fhirbridge.errors import ProfileError, VersionConflict
from fhirbridge.fhir.client import FhirClient
from fhirbridge.values import (
    ENGINE_TAG_CODE,
    ENGINE_TAG_SYSTEM,
    IDENTIFIER_SYSTEM,
    CompleteCarePlan,
    CreateReferral,
)

__all__ = ["PATIENT_REFERRAL", "build_referral", "complete_careplan", "write_referral"]

log = structlog.get_logger(__name__)

#: SNOMED CT 3457005 "Patient referral": the marker the referral tracking recognises.
PATIENT_REFERRAL = {
    "system": "http://snomed.info/sct",
    "code": "3457005",
    "display": "Patient referral",
}
_RETRIES = 5

#: Records a write's Provenance: ``(target, entities, activity, reason)``.
Provenance = Callable[[str, list[str], str, str], Awaitable[None]]


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


async def write_referral(
    client: FhirClient,
    action: CreateReferral,
    *,
    now: datetime,
    requester: str,
    provenance: Provenance,
) -> dict[str, Any]:
    """Create the referral unless it exists; Provenance names the need's record."""
    request = build_referral(action, authored_on=now, requester=requester)
    written = await client.create(
        request, if_none_exist=f"identifier={IDENTIFIER_SYSTEM}|{action.identifier}"
    )
    ref = f"ServiceRequest/{written.id}"
    version = written.version_id or "1"
    await provenance(
        f"{ref}/_history/{version}", [action.reason], "CREATE", f"rule {action.rule_id}"
    )
    log.info("referral_written", rule_id=action.rule_id, need=action.need, resource=ref)
    return {"service_request": ref, "created": written.created}


async def complete_careplan(
    client: FhirClient, action: CompleteCarePlan, *, provenance: Provenance
) -> dict[str, Any]:
    """Set the CarePlan completed if it is still active (If-Match, re-read on conflict)."""
    kind, cid = action.careplan.split("/", 1)
    for _ in range(_RETRIES):
        careplan = await client.read(kind, cid)
        if careplan.get("status") != "active":
            return {"careplan": action.careplan, "changed": False}
        careplan["status"] = "completed"
        try:
            written = await client.update(careplan, if_match=careplan["meta"]["versionId"])
        except VersionConflict:
            continue
        target = f"{action.careplan}/_history/{written.version_id}"
        await provenance(target, [], "UPDATE", action.reason)
        log.info("careplan_completed", resource=action.careplan)
        return {"careplan": action.careplan, "changed": True}
    raise VersionConflict(f"{action.careplan} kept changing under us", status=412)
