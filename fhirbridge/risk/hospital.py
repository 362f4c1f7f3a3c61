"""The HOSPITAL score (Donzé, JAMA Intern Med 2013): potentially avoidable 30-day readmission.

=====  ==========================================================  ==========================
item   what                                                        points
=====  ==========================================================  ==========================
H      last haemoglobin of the stay < 12 g/dL                      1
O      discharge from an oncology service                          2
S      last sodium of the stay < 135 mmol/L                        1
P      any procedure during the stay                               1
IT     urgent or emergent index admission                          1
A      inpatient admissions in the 12 months before                0-1: 0, 2-5: 2, >5: 5
L      length of stay >= 5 days                                    2
=====  ==========================================================  ==========================

Total 0-13: low 0-4, intermediate 5-6, high 7 and above (Donzé et al., JAMA Intern Med 2013).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from fhirbridge._fhirjson import (
    Resource,
    has_code,
    instant,
    period,
    ref_key,
    resource_key,
    same_subject,
    texts,
)
from fhirbridge.risk._encounter import (
    Stay,
    acuity_of,
    check_encounter,
    is_inpatient,
    other_encounters,
    started_in_window,
    stay_of,
)
from fhirbridge.risk._result import Evidence, ScoreResult
from fhirbridge.risk.codes import LabTable, risk_inputs

__all__ = [
    "ADMISSIONS_WINDOW_MONTHS",
    "HOSPITAL_TIERS",
    "admissions_points",
    "hospital",
]

#: Lower bound and name of each risk band.
HOSPITAL_TIERS = ((0, "low"), (5, "intermediate"), (7, "high"))
#: How far back earlier admissions count.
ADMISSIONS_WINDOW_MONTHS = 12
#: Observation statuses that carry no usable result.
_VOID_OBSERVATION = frozenset({"cancelled", "entered-in-error", "registered"})
#: Procedure statuses that mean nothing was done.
_VOID_PROCEDURE = frozenset({"entered-in-error", "not-done", "preparation"})


def admissions_points(admissions: int) -> int:
    """A: 0-1 earlier admissions give 0; 2-5 give 2; more than 5 give 5."""
    if admissions <= 1:
        return 0
    return 2 if admissions <= 5 else 5


@dataclass(frozen=True, slots=True)
class _LabResult:
    value: float
    key: str | None


def _first_instant(resource: Resource, *names: str) -> datetime | None:
    for name in names:
        if name.endswith("Period"):
            value = resource.get(name)
            moment = instant(value.get("start")) if isinstance(value, Mapping) else None
        else:
            moment = instant(resource.get(name))
        if moment is not None:
            return moment
    return None


def _belongs(resource: Resource, stay: Stay, moment: datetime | None) -> bool:
    """Referenced to the index encounter, or timed within the stay."""
    return (stay.key is not None and ref_key(resource.get("encounter")) == stay.key) or stay.within(
        moment
    )


def _last_result(stay: Stay, observations: Sequence[Resource], lab: LabTable) -> _LabResult | None:
    """The last usable result of ``lab`` taken during the stay, before the discharge."""
    wanted = [(lab.system, code) for code in lab.codes]
    best: tuple[datetime, int, _LabResult] | None = None
    for position, obs in enumerate(observations):
        if not isinstance(obs, Mapping) or obs.get("status") in _VOID_OBSERVATION:
            continue
        if not same_subject(obs, stay.patient) or not has_code(obs.get("code"), wanted):
            continue
        moment = _first_instant(obs, "effectiveDateTime", "effectiveInstant", "effectivePeriod")
        moment = moment or instant(obs.get("issued"))
        if moment is None or not _belongs(obs, stay, moment):
            continue
        if stay.end is not None and moment > stay.end:
            continue
        quantity = obs.get("valueQuantity")
        if not isinstance(quantity, Mapping):
            continue
        number = quantity.get("value")
        if isinstance(number, bool) or not isinstance(number, int | float):
            continue
        unit = quantity.get("code") or quantity.get("unit")
        value = lab.convert(float(number), unit if isinstance(unit, str) else None)
        if value is None:
            continue
        candidate = (moment, position, _LabResult(value, resource_key(obs)))
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def _procedures(stay: Stay, procedures: Sequence[Resource]) -> list[Resource]:
    """The procedures done during the stay."""
    done = []
    for proc in procedures:
        if not isinstance(proc, Mapping) or proc.get("status") in _VOID_PROCEDURE:
            continue
        if not same_subject(proc, stay.patient):
            continue
        moment = _first_instant(
            proc, "performedDateTime", "performedPeriod", "occurrenceDateTime", "occurrencePeriod"
        )
        if _belongs(proc, stay, moment):
            done.append(proc)
    return done


def _service_pairs(services: Collection[str]) -> tuple[tuple[str | None, str], ...]:
    """``"system|code"`` or ``"code"`` (any system) strings as (system, code) pairs."""
    pairs: list[tuple[str | None, str]] = []
    for service in services:
        system, sep, code = service.rpartition("|")
        pairs.append((system if sep and system else None, code))
    return tuple(pairs)


def discharge_location(encounter: Resource) -> Mapping[str, Any] | None:
    """The Location reference the patient left from: the ``location`` entry that began last
    (entries without a period count in list order, before dated ones)."""
    entries = [
        (position, entry)
        for position, entry in enumerate(encounter.get("location") or ())
        if isinstance(entry, Mapping) and isinstance(entry.get("location"), Mapping)
    ]
    if not entries:
        return None

    def began(item: tuple[int, Mapping[str, Any]]) -> tuple[datetime, int]:
        start, _ = period(item[1])
        return instant(start) or datetime.min.replace(tzinfo=UTC), item[0]

    location: Mapping[str, Any] = max(entries, key=began)[1]["location"]
    return location


def _oncology(
    encounter: Resource,
    codes: tuple[tuple[str | None, str], ...],
    keywords: tuple[str, ...],
    organizations: frozenset[str] = frozenset(),
    locations: frozenset[str] = frozenset(),
) -> tuple[bool, bool]:
    """(discharged from an oncology service, any service information present).

    The service is oncology when ``serviceType`` or ``type`` has one of ``codes``, when a
    service name (their texts, ``serviceProvider.display``, the discharge location's display)
    contains a keyword, or when ``serviceProvider`` or the discharge location is one of the
    configured oncology ``organizations`` or ``locations`` (``Type/id`` references).
    """
    elements = [encounter.get("serviceType"), encounter.get("type")]
    provider = encounter.get("serviceProvider")
    where = discharge_location(encounter)
    names = [text for element in elements for text in texts(element)]
    for ref in (provider, where):
        name = ref.get("display") if isinstance(ref, Mapping) else None
        if isinstance(name, str) and name:
            names.append(name)
    provider_key, where_key = ref_key(provider), ref_key(where)
    known = (
        bool(names)
        or any(bool(element) for element in elements)
        or provider_key is not None
        or where_key is not None
    )
    coded = any(has_code(element, codes) for element in elements)
    named = any(keyword in name.casefold() for name in names for keyword in keywords)
    placed = (provider_key is not None and provider_key in organizations) or (
        where_key is not None and where_key in locations
    )
    return coded or named or placed, known


def _references(values: Collection[str], kind: str) -> frozenset[str]:
    """``Type/id`` keys of references given as ``Organization/1``, a bare id or a full URL."""
    keys = set()
    for value in values:
        key = ref_key(value) if "/" in value else f"{kind}/{value}"
        if key is not None:
            keys.add(key)
    return frozenset(keys)


def hospital(
    encounter: Mapping[str, Any],
    *,
    observations: Sequence[Mapping[str, Any]] = (),
    procedures: Sequence[Mapping[str, Any]] = (),
    encounters: Sequence[Mapping[str, Any]] = (),
    oncology_services: Collection[str] | None = None,
    tz: tzinfo = UTC,
    oncology_organizations: Collection[str] = (),
    oncology_locations: Collection[str] = (),
) -> ScoreResult:
    """The HOSPITAL score of an index inpatient Encounter, from plain FHIR R4 JSON dicts.

    ``observations`` are the patient's laboratory results (haemoglobin LOINC 718-7 in g/dL,
    g/L or mmol/L; sodium 2951-2 or 2947-0 in mmol/L): the last one of the stay before the
    discharge counts. ``procedures`` count when they point to the index encounter or were
    performed during the stay. ``encounters`` are the patient's other Encounters (the linked
    ED visit, earlier admissions). ``oncology_services`` replaces the shipped oncology service
    codes (``"system|code"`` or a bare ``"code"``); "oncolog" in a service's name matches
    always. ``oncology_organizations`` and ``oncology_locations`` (``Organization/1``,
    ``Location/onc-ward``) are the facility's oncology units: a stay whose ``serviceProvider``
    or discharge location is one of them scores O even when no service is coded (the
    ``risk.oncology`` configuration). Dates are taken in ``tz``. An input that is not there
    counts as 0 points and is named in ``missing``.
    """
    check_encounter(encounter)
    inputs = risk_inputs()
    stay = stay_of(encounter, inputs, tz)
    evidence = Evidence(stay.key)

    def lab_points(lab: LabTable, label: str) -> int:
        result = _last_result(stay, observations, lab)
        evidence.note(label, result is not None)
        if result is None:
            return 0
        if result.key:
            evidence.refs.append(result.key)
        return 1 if result.value < lab.threshold else 0

    points_h = lab_points(inputs.haemoglobin, "haemoglobin")

    codes = (
        inputs.oncology_codes if oncology_services is None else _service_pairs(oncology_services)
    )
    oncology, service_known = _oncology(
        encounter,
        codes,
        inputs.oncology_keywords,
        _references(oncology_organizations, "Organization"),
        _references(oncology_locations, "Location"),
    )
    evidence.note("service", service_known)
    points_o = 2 if oncology else 0

    points_s = lab_points(inputs.sodium, "sodium")

    done = _procedures(stay, procedures)
    evidence.note("procedures", bool(procedures))
    points_p = 1 if done else 0
    evidence.cite(done)

    acuity = acuity_of(encounter, stay, encounters, inputs)
    evidence.note("admission-acuity", acuity.known)
    points_it = 1 if acuity.acute else 0
    evidence.cite(acuity.linked)

    history = list(other_encounters(stay, encounters, inputs))
    admissions = [
        e
        for e in history
        if is_inpatient(e, inputs)
        and (resource_key(e) is None or resource_key(e) != stay.part_of)
        and (stay.key is None or ref_key(e.get("partOf")) != stay.key)
        and started_in_window(e, stay, ADMISSIONS_WINDOW_MONTHS, tz)
    ]
    evidence.note("admissions", bool(history) and stay.start is not None)
    points_a = admissions_points(len(admissions))
    evidence.cite(admissions)

    los = stay.length_of_stay
    evidence.note("length-of-stay", los is not None)
    points_l = 2 if los is not None and los >= 5 else 0

    return evidence.result(
        "hospital",
        {
            "H": points_h,
            "O": points_o,
            "S": points_s,
            "P": points_p,
            "IT": points_it,
            "A": points_a,
            "L": points_l,
        },
        HOSPITAL_TIERS,
        acuity_signals=acuity.signals,
        length_of_stay=los,
    )
