"""FHIR R4 resources as the engine reads them, built in one call, for tests.

Each builder returns a new plain JSON dict (what a server sends, not a ``fhir.resources``
model) that validates as FHIR R4 (R4B models), with defaults that make a sensible resource
of Patient/p1 and keyword arguments for what a test varies::

    stay = encounter(disposition="home")              # Encounter/e1, inpatient, discharged
    er = encounter("e2", cls="EMER", status="in-progress")
    heart = condition("I50.9")                         # ICD-10-CM, active
    copd = condition("13645005", system=SNOMED)

Everything is deterministic: fixed ids (``p1``, ``e1``, ``c1``...), fixed dates around one
stay (admitted :data:`ADMITTED`, discharged :data:`DISCHARGED`), no clock and no randomness.
Every builder also takes other top-level elements as keywords (``meta={...}``,
``hospitalization={...}``), which replace what it built; a trailing underscore is dropped
(``class_``, ``for_``) and ``None`` removes an element (``rid=None`` leaves out the id, for a
server-assigned one). :func:`revise` makes the next version of a resource the same way, for
detection tests of ``(before, after)``.

A patient, an encounter, a location or an owner is given as a reference (``"Patient/p1"``,
or an absolute URL) or as a bare id of the expected type (``"p1"``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from fhirbridge.values import ENGINE_TAG_CODE, ENGINE_TAG_SYSTEM, TASK_CODE_SYSTEM

__all__ = [
    "ACT_CODE",
    "ADMITTED",
    "CONDITION_CLINICAL",
    "CONDITION_VERIFICATION",
    "DISCHARGED",
    "DISCHARGE_DISPOSITION",
    "ICD10CM",
    "LOINC",
    "OBSERVATION_CATEGORY",
    "REFERRAL",
    "SNOMED",
    "UCUM",
    "Instant",
    "appointment",
    "care_plan",
    "condition",
    "coverage",
    "encounter",
    "fhir_instant",
    "observation",
    "patient",
    "revise",
    "service_request",
    "task",
]

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DISCHARGE_DISPOSITION = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
#: SNOMED CT "Patient referral": the category that makes a ServiceRequest a referral.
REFERRAL = {"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}]}

#: When the default stay began and ended (a Monday to a Thursday).
ADMITTED = "2026-11-02T08:00:00Z"
DISCHARGED = "2026-11-05T15:00:00Z"

#: A FHIR dateTime or date: a string as is, a datetime or date in ISO form (UTC as ``Z``).
Instant = str | datetime | date


def fhir_instant(moment: Instant) -> str:
    """A FHIR dateTime (or date) for ``moment``; strings are taken as already FHIR."""
    if isinstance(moment, str):
        return moment
    return moment.isoformat().replace("+00:00", "Z")


def revise(
    resource: Mapping[str, Any],
    *,
    version: int | str | None = None,
    updated: Instant | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A deep copy of ``resource`` with top-level ``fields`` replaced (``None`` removes one, a
    trailing underscore is dropped) and, when given, a new ``meta.versionId`` and
    ``meta.lastUpdated`` (other ``meta`` elements kept)."""
    out = copy.deepcopy(dict(resource))
    for name, value in fields.items():
        key = name.removesuffix("_")
        if value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    if version is not None or updated is not None:
        meta = dict(out.get("meta") or {})
        if version is not None:
            meta["versionId"] = str(version)
        if updated is not None:
            meta["lastUpdated"] = fhir_instant(updated)
        out["meta"] = meta
    return out


def patient(
    rid: str | None = "p1",
    *,
    family: str = "Doe",
    given: str = "Jane",
    gender: str | None = "female",
    birth_date: Instant | None = "1950-03-04",
    mrn: tuple[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A Patient with one name; ``mrn`` is an identifier ``(system, value)``."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": rid,
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": fhir_instant(birth_date) if birth_date is not None else None,
    }
    if mrn is not None:
        resource["identifier"] = [{"system": mrn[0], "value": mrn[1]}]
    return _finish(resource, fields)


def encounter(
    rid: str | None = "e1",
    *,
    patient: str = "p1",
    cls: str = "IMP",
    status: str = "finished",
    start: Instant | None = ADMITTED,
    end: Instant | None = None,
    disposition: str | tuple[str, str] | None = None,
    locations: Sequence[str | Mapping[str, Any]] = (),
    class_history: Sequence[tuple[str, Instant, Instant | None]] = (),
    **fields: Any,
) -> dict[str, Any]:
    """An Encounter of class ``cls`` (v3 ActCode: ``IMP`` inpatient, ``EMER`` emergency,
    ``OBSENC``, ``AMB``...) from ``start``; a ``finished`` one ends at ``end``, by default
    :data:`DISCHARGED` (pass ``period=`` for any other shape).

    ``disposition`` is a discharge-disposition code of the HL7 system (``"home"``) or a
    ``(system, code)`` pair; ``locations`` are where the patient was, in order (references or
    ids, the last active and the others completed, or whole ``Encounter.location`` entries);
    ``class_history`` is ``(class, start, end)`` rows.
    """
    if end is None and status == "finished":
        end = DISCHARGED
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": rid,
        "status": status,
        "class": {"system": ACT_CODE, "code": cls},
        "subject": {"reference": _reference("Patient", patient)},
        "period": _period(start, end),
    }
    if class_history:
        resource["classHistory"] = [
            {"class": {"system": ACT_CODE, "code": code}, "period": _period(begun, ended)}
            for code, begun, ended in class_history
        ]
    if locations:
        last = len(locations) - 1
        resource["location"] = [
            dict(where)
            if isinstance(where, Mapping)
            else {
                "location": {"reference": _reference("Location", where)},
                "status": "active" if n == last else "completed",
            }
            for n, where in enumerate(locations)
        ]
    if disposition is not None:
        system, code = (
            (DISCHARGE_DISPOSITION, disposition) if isinstance(disposition, str) else disposition
        )
        resource["hospitalization"] = {"dischargeDisposition": _concept(code, system)}
    return _finish(resource, fields)


def condition(
    code: str = "I50.9",
    system: str = ICD10CM,
    *,
    rid: str | None = "c1",
    patient: str = "p1",
    clinical: str | None = "active",
    verification: str | None = None,
    display: str | None = None,
    recorded: Instant | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A Condition coded ``code`` in ``system`` (ICD-10-CM unless told, :data:`SNOMED` for
    SNOMED CT) with its clinical status (``None`` for none), verification status and
    recorded date when given."""
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "code": _concept(code, system, display),
        "subject": {"reference": _reference("Patient", patient)},
    }
    if clinical is not None:
        resource["clinicalStatus"] = _concept(clinical, CONDITION_CLINICAL)
    if verification is not None:
        resource["verificationStatus"] = _concept(verification, CONDITION_VERIFICATION)
    if recorded is not None:
        resource["recordedDate"] = fhir_instant(recorded)
    return _finish(resource, fields)


def observation(
    code: str = "718-7",
    system: str = LOINC,
    *,
    rid: str | None = "o1",
    patient: str = "p1",
    value: float | str | bool | tuple[str, str] | None = None,
    unit: str | None = None,
    status: str = "final",
    category: str | None = None,
    effective: Instant | None = "2026-11-04T06:00:00Z",
    **fields: Any,
) -> dict[str, Any]:
    """An Observation coded ``code`` (LOINC unless told), effective at ``effective``.

    ``value`` is a number (a ``valueQuantity``, in UCUM ``unit`` when given), a string, a bool
    or a ``(system, code)`` answer (a ``valueCodeableConcept``); ``category`` is a code of
    the HL7 observation-category system (``laboratory``, ``social-history``, ``survey``).
    """
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "status": status,
        "code": _concept(code, system),
        "subject": {"reference": _reference("Patient", patient)},
    }
    if category is not None:
        resource["category"] = [_concept(category, OBSERVATION_CATEGORY)]
    if effective is not None:
        resource["effectiveDateTime"] = fhir_instant(effective)
    if isinstance(value, bool):
        resource["valueBoolean"] = value
    elif isinstance(value, int | float):
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity.update(unit=unit, system=UCUM, code=unit)
        resource["valueQuantity"] = quantity
    elif isinstance(value, str):
        resource["valueString"] = value
    elif value is not None:
        resource["valueCodeableConcept"] = _concept(value[1], value[0])
    return _finish(resource, fields)


def service_request(
    rid: str | None = "sr1",
    *,
    patient: str = "p1",
    status: str = "active",
    intent: str = "order",
    code: tuple[str, str] | None = (SNOMED, "306206005"),
    referral: bool = True,
    authored: Instant | None = "2026-11-05T14:00:00Z",
    **fields: Any,
) -> dict[str, Any]:
    """A ServiceRequest (by default a referral: SNOMED 3457005 in its category, for the
    ``code`` ``(system, code)``, SNOMED "Referral to service") authored at ``authored``."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": rid,
        "status": status,
        "intent": intent,
        "subject": {"reference": _reference("Patient", patient)},
    }
    if referral:
        resource["category"] = [copy.deepcopy(REFERRAL)]
    if code is not None:
        resource["code"] = _concept(code[1], code[0])
    if authored is not None:
        resource["authoredOn"] = fhir_instant(authored)
    return _finish(resource, fields)


def task(
    rid: str | None = "t1",
    *,
    patient: str = "p1",
    code: str = "tcm-contact",
    system: str | None = TASK_CODE_SYSTEM,
    status: str = "requested",
    intent: str = "order",
    focus: str | None = None,
    owner: str | None = None,
    due: Instant | None = None,
    based_on: str | None = None,
    encounter: str | None = None,
    display: str | None = None,
    authored: Instant | None = None,
    last_modified: Instant | None = None,
    engine: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A Task for the patient coded ``code`` (in the engine's task-code system unless told;
    ``system=None`` for a bare code; ``display`` on the coding when given), with its
    ``focus``, ``owner``, ``based_on`` and ``encounter`` references, ``due``
    (``restriction.period.end``), ``authored`` (``authoredOn``) and ``last_modified``
    (``lastModified``, when it was last worked) when given; ``engine`` tags it as the
    engine's own."""
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": rid,
        "status": status,
        "intent": intent,
        "code": _concept(code, system, display),
        "for": {"reference": _reference("Patient", patient)},
    }
    if engine:
        resource["meta"] = _engine_meta()
    if focus is not None:
        resource["focus"] = {"reference": _reference("Encounter", focus)}
    if owner is not None:
        resource["owner"] = {"reference": _reference("Practitioner", owner)}
    if based_on is not None:
        resource["basedOn"] = [{"reference": _reference("CarePlan", based_on)}]
    if encounter is not None:
        resource["encounter"] = {"reference": _reference("Encounter", encounter)}
    if authored is not None:
        resource["authoredOn"] = fhir_instant(authored)
    if last_modified is not None:
        resource["lastModified"] = fhir_instant(last_modified)
    if due is not None:
        resource["restriction"] = {"period": {"end": fhir_instant(due)}}
    return _finish(resource, fields)


def care_plan(
    rid: str | None = "cp1",
    *,
    patient: str = "p1",
    status: str = "active",
    intent: str = "plan",
    created: Instant | None = "2026-11-05T16:00:00Z",
    activities: Iterable[str] = (),
    engine: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A CarePlan of the patient whose activities reference the given Tasks (references or
    Task ids); ``engine`` tags it as the engine's own."""
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": rid,
        "status": status,
        "intent": intent,
        "subject": {"reference": _reference("Patient", patient)},
    }
    if engine:
        resource["meta"] = _engine_meta()
    if created is not None:
        resource["created"] = fhir_instant(created)
    activity = [{"reference": {"reference": _reference("Task", ref)}} for ref in activities]
    if activity:
        resource["activity"] = activity
    return _finish(resource, fields)


def coverage(
    rid: str | None = "cov1",
    *,
    patient: str = "p1",
    status: str = "active",
    start: Instant | None = "2026-01-01",
    end: Instant | None = "2026-12-31",
    payor: str = "Organization/payer",
    **fields: Any,
) -> dict[str, Any]:
    """A Coverage of the patient (beneficiary and subscriber) paid by ``payor``, in force
    from ``start`` to ``end``."""
    resource: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": rid,
        "status": status,
        "subscriber": {"reference": _reference("Patient", patient)},
        "beneficiary": {"reference": _reference("Patient", patient)},
        "payor": [{"reference": _reference("Organization", payor)}],
    }
    if start is not None or end is not None:
        resource["period"] = _period(start, end)
    return _finish(resource, fields)


def appointment(
    rid: str | None = "a1",
    *,
    patient: str = "p1",
    status: str = "booked",
    start: Instant | None = "2026-11-12T09:00:00Z",
    end: Instant | None = "2026-11-12T09:30:00Z",
    service_type: tuple[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An Appointment of the patient (an accepted, required participant) from ``start`` to
    ``end``, with one ``service_type`` ``(system, code)`` when given; ``status="noshow"``
    for a missed one."""
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": rid,
        "status": status,
        "participant": [
            {
                "actor": {"reference": _reference("Patient", patient)},
                "required": "required",
                "status": "accepted",
            }
        ],
    }
    if service_type is not None:
        resource["serviceType"] = [_concept(service_type[1], service_type[0])]
    if start is not None:
        resource["start"] = fhir_instant(start)
    if end is not None:
        resource["end"] = fhir_instant(end)
    return _finish(resource, fields)


def _finish(resource: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    built = {key: value for key, value in resource.items() if value is not None}
    return revise(built, **fields)


def _engine_meta() -> dict[str, Any]:
    return {"tag": [{"system": ENGINE_TAG_SYSTEM, "code": ENGINE_TAG_CODE}]}


def _reference(kind: str, value: str) -> str:
    return value if "/" in value or ":" in value else f"{kind}/{value}"


def _concept(code: str, system: str | None, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code} if system is None else {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return {"coding": [coding]}


def _period(start: Instant | None, end: Instant | None) -> dict[str, str]:
    ends = {"start": start, "end": end}
    return {key: fhir_instant(value) for key, value in ends.items() if value is not None}
