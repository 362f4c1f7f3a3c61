"""Readmission risk scores (LACE, HOSPITAL, Charlson) as pure functions of FHIR R4 JSON.

Every score takes plain resource dicts (no server, no models) and returns a frozen
:class:`ScoreResult`: total, tier, points per item, the inputs found and missing (a missing
input counts as 0 points and is reported), and the ``Type/id`` of the resources used. The
result becomes FHIR with :func:`score_observation` and :func:`risk_assessment`::

    from datetime import UTC, datetime

    from fhirbridge.risk import lace, risk_assessment, score_observation

    stay = {
        "resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"code": "IMP"}, "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-03-01T10:00:00Z", "end": "2024-03-05T12:00:00Z"},
        "hospitalization": {"admitSource": {"coding": [{"code": "emd"}]}},
    }
    chf = {
        "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I50.9"}]},
    }
    result = lace(stay, conditions=[chf])
    # result.total == 9 (L 4, A 3, C 2, E 0), result.tier == "moderate"
    now = datetime(2024, 3, 5, 12, tzinfo=UTC)
    obs = score_observation(
        result, patient="Patient/p1", encounter="Encounter/e1", effective=now, identifier="lace-e1"
    )
    ra = risk_assessment(
        result, patient="Patient/p1", encounter="Encounter/e1",
        observation_ref="Observation/lace-e1", occurrence=now, identifier="ra-lace-e1",
    )

Code tables live in ``mappings/``: ``charlson-icd10.yaml`` (Quan's ICD-10 categories, the
Charlson and LACE weights), ``charlson-snomed.yaml`` (SNOMED CT concepts with their ICD-10-CM
targets, local codes, the fallback terms) and ``risk-inputs.yaml`` (laboratory codes, acuity
signals, oncology services). A result lists the Condition codes no table recognised
(``ScoreResult.unrecognised``). Conditions count as they stood during the index stay
(:func:`fhirbridge.risk.comorbidity.active_during`); days are counted in the facility's zone
(:mod:`fhirbridge.risk.zone`); a death in hospital gets no score
(:func:`fhirbridge.risk.eligibility.not_scored_reason`).
"""

from __future__ import annotations

from fhirbridge.risk._result import ScoreResult
from fhirbridge.risk.assessment import risk_assessment, score_observation
from fhirbridge.risk.comorbidity import charlson
from fhirbridge.risk.hospital import hospital
from fhirbridge.risk.lace import lace

__all__ = [
    "ScoreResult",
    "charlson",
    "hospital",
    "lace",
    "risk_assessment",
    "score_observation",
]
