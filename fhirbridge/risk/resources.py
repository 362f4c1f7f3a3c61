"""A :class:`ScoreResult` as FHIR R4 resources: a score Observation and a RiskAssessment.

Both are plain JSON dicts that ``fhir.resources`` R4B models validate; the writeback stage
validates them again (with the engine's profiles) before they leave. Codes come from the
engine's CodeSystem ``https://fhirbridge.dev/fhir/CodeSystem/risk-score``
(``profiles/CodeSystem-fhirbridge-risk.json``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhirbridge.risk._result import ScoreResult
from fhirbridge.values import ENGINE_SYSTEM

__all__ = [
    "COMPONENT_DISPLAYS",
    "IDENTIFIER_SYSTEM",
    "OUTCOMES",
    "RISK_PROBABILITY_SYSTEM",
    "SCORE_DISPLAYS",
    "SCORE_SYSTEM",
    "TAG",
    "risk_assessment",
    "score_observation",
]

SCORE_SYSTEM = f"{ENGINE_SYSTEM}/CodeSystem/risk-score"
IDENTIFIER_SYSTEM = f"{ENGINE_SYSTEM}/identifier"
TAG = {"system": f"{ENGINE_SYSTEM}/tag", "code": "fhirbridge"}
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"

#: Display of each score code (as in the CodeSystem).
SCORE_DISPLAYS = {
    "lace": "LACE index for readmission",
    "hospital": "HOSPITAL score for readmission",
}
#: Display of each component code ``{score}-{item}`` (as in the CodeSystem).
COMPONENT_DISPLAYS = {
    "lace-L": "LACE L: length of stay",
    "lace-A": "LACE A: acuity of admission",
    "lace-C": "LACE C: comorbidity (Charlson, LACE weights)",
    "lace-E": "LACE E: emergency department visits in the previous 6 months",
    "hospital-H": "HOSPITAL H: haemoglobin at discharge below 12 g/dL",
    "hospital-O": "HOSPITAL O: discharge from an oncology service",
    "hospital-S": "HOSPITAL S: sodium at discharge below 135 mmol/L",
    "hospital-P": "HOSPITAL P: procedure during the stay",
    "hospital-IT": "HOSPITAL IT: index admission type urgent or emergent",
    "hospital-A": "HOSPITAL A: admissions in the previous 12 months",
    "hospital-L": "HOSPITAL L: length of stay of 5 days or more",
}
#: What each score predicts (RiskAssessment.prediction.outcome.text).
OUTCOMES = {
    "lace": "Death or unplanned readmission within 30 days of discharge",
    "hospital": "Potentially avoidable readmission within 30 days of discharge",
}
#: Tier -> risk-probability code; HOSPITAL's "intermediate" is "moderate" (text keeps the tier).
_PROBABILITY = {
    "low": ("low", "Low likelihood"),
    "moderate": ("moderate", "Moderate likelihood"),
    "intermediate": ("moderate", "Moderate likelihood"),
    "high": ("high", "High likelihood"),
}
#: The resource types R4 allows in Observation.derivedFrom.
_DERIVED_FROM_TYPES = frozenset(
    {
        "DocumentReference",
        "ImagingStudy",
        "Media",
        "QuestionnaireResponse",
        "Observation",
        "MolecularSequence",
    }
)


def _score_code(result: ScoreResult) -> dict[str, Any]:
    if result.score_name not in SCORE_DISPLAYS:
        raise ValueError(f"unknown score {result.score_name!r}")
    display = SCORE_DISPLAYS[result.score_name]
    return {
        "coding": [{"system": SCORE_SYSTEM, "code": result.score_name, "display": display}],
        "text": display,
    }


def _stamp(moment: datetime, name: str) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")
    return moment.isoformat()


def _common(identifier: str) -> dict[str, Any]:
    return {
        "meta": {"tag": [dict(TAG)]},
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": identifier}],
        "status": "final",
    }


def score_observation(
    result: ScoreResult,
    *,
    patient: str,
    encounter: str,
    effective: datetime,
    identifier: str,
) -> dict[str, Any]:
    """The score as an Observation: valueInteger total, one component per item.

    ``patient`` and ``encounter`` are references (``Patient/1``); ``effective`` must be aware.
    ``derivedFrom`` lists the inputs R4 allows there (the laboratory Observations); every
    input goes to the RiskAssessment's ``basis``.
    """
    observation: dict[str, Any] = {"resourceType": "Observation", **_common(identifier)}
    observation["category"] = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "survey",
                    "display": "Survey",
                }
            ]
        }
    ]
    observation["code"] = _score_code(result)
    observation["subject"] = {"reference": patient}
    observation["encounter"] = {"reference": encounter}
    observation["effectiveDateTime"] = _stamp(effective, "effective")
    observation["valueInteger"] = result.total
    derived = [ref for ref in result.inputs if ref.split("/", 1)[0] in _DERIVED_FROM_TYPES]
    if derived:
        observation["derivedFrom"] = [{"reference": ref} for ref in derived]
    components = []
    for item, points in result.components.items():
        code = f"{result.score_name}-{item}"
        display = COMPONENT_DISPLAYS.get(code)
        if display is None:
            raise ValueError(f"unknown component {code!r}")
        components.append(
            {
                "code": {"coding": [{"system": SCORE_SYSTEM, "code": code, "display": display}]},
                "valueInteger": points,
            }
        )
    if components:
        observation["component"] = components
    return observation


def risk_assessment(
    result: ScoreResult,
    *,
    patient: str,
    encounter: str,
    observation_ref: str,
    occurrence: datetime,
    identifier: str,
) -> dict[str, Any]:
    """The score's tier as a RiskAssessment whose basis is the score Observation and the inputs.

    ``prediction[0].qualitativeRisk`` is coded in risk-probability (low, moderate, high; the
    HOSPITAL tier "intermediate" is coded moderate) with the score's own tier as text.
    """
    if result.tier not in _PROBABILITY:
        raise ValueError(f"unknown tier {result.tier!r}")
    code, display = _PROBABILITY[result.tier]
    basis = dict.fromkeys([observation_ref, *result.inputs])
    assessment: dict[str, Any] = {"resourceType": "RiskAssessment", **_common(identifier)}
    assessment["method"] = _score_code(result)
    assessment["subject"] = {"reference": patient}
    assessment["encounter"] = {"reference": encounter}
    assessment["occurrenceDateTime"] = _stamp(occurrence, "occurrence")
    assessment["basis"] = [{"reference": ref} for ref in basis]
    assessment["prediction"] = [
        {
            "outcome": {"text": OUTCOMES[result.score_name]},
            "qualitativeRisk": {
                "coding": [{"system": RISK_PROBABILITY_SYSTEM, "code": code, "display": display}],
                "text": result.tier,
            },
        }
    ]
    return assessment
