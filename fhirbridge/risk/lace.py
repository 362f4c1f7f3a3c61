"""The LACE index (van Walraven, CMAJ 2010): 30-day death or unplanned readmission.

=====  ===========================================================  =========================
item   what                                                         points
=====  ===========================================================  =========================
L      length of stay: discharge date minus admission date, days    <1: 0, 1-3: days, 4-6: 4,
                                                                    7-13: 5, >=14: 7
A      acute admission (via the emergency department)               3
C      Charlson score with LACE's weights                           0-3: same, >=4: 5
E      ED visits in the 6 months before, not the one that led here  0-3: same, >=4: 4
=====  ===========================================================  =========================

Total 0-19: low 0-4, moderate 5-9, high 10 and above (van Walraven et al., CMAJ 2010).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, tzinfo
from typing import Any

from fhirbridge._fhirjson import ref_key, same_subject
from fhirbridge.risk._encounter import (
    acuity_of,
    check_encounter,
    is_emergency,
    other_encounters,
    started_in_window,
    stay_of,
)
from fhirbridge.risk._result import Evidence, ScoreResult
from fhirbridge.risk.codes import risk_inputs
from fhirbridge.risk.comorbidity import active_during, charlson_detail

__all__ = [
    "ACUTE_POINTS",
    "ED_WINDOW_MONTHS",
    "LACE_TIERS",
    "comorbidity_points",
    "ed_visit_points",
    "lace",
    "length_of_stay_points",
]

#: Lower bound and name of each risk band.
LACE_TIERS = ((0, "low"), (5, "moderate"), (10, "high"))
#: Points for an acute admission.
ACUTE_POINTS = 3
#: How far back ED visits count.
ED_WINDOW_MONTHS = 6


def length_of_stay_points(days: int) -> int:
    """L: <1 day 0; 1, 2, 3 days the same; 4-6 days 4; 7-13 days 5; 14 or more 7."""
    if days < 1:
        return 0
    if days <= 3:
        return days
    if days <= 6:
        return 4
    if days <= 13:
        return 5
    return 7


def comorbidity_points(charlson_score: int) -> int:
    """C: a Charlson score (LACE weights) of 0-3 gives the same; 4 or more gives 5."""
    return charlson_score if charlson_score <= 3 else 5


def ed_visit_points(visits: int) -> int:
    """E: 0-3 ED visits give the same; 4 or more give 4."""
    return min(visits, 4)


def lace(
    encounter: Mapping[str, Any],
    *,
    conditions: Sequence[Mapping[str, Any]] = (),
    encounters: Sequence[Mapping[str, Any]] = (),
    tz: tzinfo = UTC,
) -> ScoreResult:
    """The LACE index of an index inpatient Encounter, from plain FHIR R4 JSON dicts.

    ``conditions`` are the patient's Conditions: those of another subject are ignored, and the
    others count as they stood during the index stay (begun by the discharge date, not abated
    before the admission date, whatever their status today: see
    :func:`~fhirbridge.risk.comorbidity.active_during`). ``encounters`` are the patient's other
    Encounters, used to find the ED visit that led to this admission and the ED visits of the
    6 months before the admission. Days are counted on calendar dates in ``tz`` (the
    facility's time zone; see :mod:`fhirbridge.risk.zone`). An input that is not there counts
    as 0 points and is named in ``missing``; Condition codes no table recognised are listed in
    ``unrecognised``.
    """
    check_encounter(encounter)
    inputs = risk_inputs()
    stay = stay_of(encounter, inputs, tz)
    evidence = Evidence(stay.key)

    los = stay.length_of_stay
    evidence.note("length-of-stay", los is not None)
    points_l = 0 if los is None else length_of_stay_points(los)

    acuity = acuity_of(encounter, stay, encounters, inputs)
    evidence.note("admission-acuity", acuity.known)
    points_a = ACUTE_POINTS if acuity.acute else 0
    evidence.cite(acuity.linked)

    eligible = [
        c
        for c in conditions
        if isinstance(c, Mapping)
        and same_subject(c, stay.patient)
        and active_during(c, stay.start_date, stay.end_date, tz)
    ]
    evidence.note("conditions", bool(eligible))
    detail = charlson_detail(eligible, weights="lace", current=False)
    points_c = comorbidity_points(detail.points)
    evidence.refs.extend(detail.sources)

    history = list(other_encounters(stay, encounters, inputs))
    linked = {id(e) for e in acuity.linked}
    visits = [
        e
        for e in history
        if id(e) not in linked
        and (stay.key is None or ref_key(e.get("partOf")) != stay.key)
        and is_emergency(e, inputs, history=True)
        and started_in_window(e, stay, ED_WINDOW_MONTHS, tz)
    ]
    evidence.note("ed-visits", bool(history) and stay.start is not None)
    points_e = ed_visit_points(len(visits))
    evidence.cite(visits)

    return evidence.result(
        "lace",
        {"L": points_l, "A": points_a, "C": points_c, "E": points_e},
        LACE_TIERS,
        charlson_categories=detail.categories,
        acuity_signals=acuity.signals,
        length_of_stay=los,
        unrecognised=detail.unrecognised,
        charlson_weights=detail.weights or {},
        charlson_by_text=detail.by_text,
    )
